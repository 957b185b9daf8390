//! Active health probes: deployments whose circuit is open are probed with a
//! cheap authenticated GET, so they can recover without trial calls on user
//! traffic. Off unless `[health_probe] enabled = true`.

use std::sync::Arc;

use tokio::time::Instant;

use super::{BreakerState, ModelRouter};
use crate::config::ProbeConfig;
use crate::tasks::Tasks;
use crate::upstream::UpstreamClient;

/// Probes `router`'s deployments until `tasks` stop (the snapshot that owns
/// the router was replaced, or the gateway shuts down).
pub fn spawn(router: Arc<ModelRouter>, client: UpstreamClient, config: ProbeConfig, tasks: &Tasks) {
    if !config.enabled {
        return;
    }
    // Holds the router weakly: the probe also ends with a build that failed
    // after this point.
    let router = Arc::downgrade(&router);
    let stop = tasks.clone();
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.stopping() => return,
            }
            let Some(router) = router.upgrade() else {
                return;
            };
            for backend in router.backends() {
                if backend.health.breaker_state() != BreakerState::Open {
                    continue;
                }
                let healthy = client.probe(&backend.deployment, config.timeout).await;
                tracing::info!(deployment = %backend.deployment.name, healthy, "health probe");
                backend.health.breaker.record_probe(healthy, Instant::now());
            }
        }
    });
}
