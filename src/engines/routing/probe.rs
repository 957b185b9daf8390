//! Active health probes: deployments whose circuit is open are probed with a
//! cheap authenticated GET, so they can recover without trial calls on user
//! traffic. Off unless `[health_probe] enabled = true`.

use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::{BreakerState, ModelRouter};
use crate::config::ProbeConfig;
use crate::upstream::UpstreamClient;
use crate::util::tasks::Tasks;

/// Probes `router`'s deployments until `tasks` stop (the snapshot that owns
/// the router was replaced, or the gateway shuts down).
pub fn spawn(router: Arc<ModelRouter>, client: UpstreamClient, config: ProbeConfig, tasks: &Tasks) {
    if !config.enabled {
        return;
    }
    // Holds the router weakly: the probe also ends with a build that failed
    // after this point.
    let router = Arc::downgrade(&router);
    // Stopped mid-round too: a round probes one deployment after another.
    tasks.spawn_until_stopped(probe_forever(router, client, config));
}

async fn probe_forever(router: Weak<ModelRouter>, client: UpstreamClient, config: ProbeConfig) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
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
}
