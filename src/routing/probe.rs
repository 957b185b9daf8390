//! Active health probes: deployments whose circuit is open are probed with a
//! cheap authenticated GET, so they can recover without trial calls on user
//! traffic. Off unless `[health_probe] enabled = true`.

use std::sync::Arc;

use tokio::time::Instant;

use super::{BreakerState, ModelRouter};
use crate::config::ProbeConfig;
use crate::upstream::UpstreamClient;

pub fn spawn(router: Arc<ModelRouter>, client: UpstreamClient, config: ProbeConfig) {
    if !config.enabled {
        return;
    }
    // Holds the router weakly: the probe ends with the gateway that owns it
    // (or with a build that failed after this point).
    let router = Arc::downgrade(&router);
    tokio::spawn(async move {
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
    });
}
