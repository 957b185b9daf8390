//! One snapshot's view of the ladder: its thresholds, static answers and
//! router, over the state the registries keep. Levels are assessed on every
//! call and by a loop, so a level changes (and is logged and exported) even
//! while no call comes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::state::{Assessment, LadderState, Outlook, Thresholds};
use crate::config::ModelSettings;
use crate::config::{DegradationConfig, StaticResponse};
use crate::engines::routing::{Backend, BreakerState, ModelRoute, ModelRouter};
use crate::infra::metrics::Metrics;
use crate::util::tasks::Tasks;
use crate::vocab::Level;

pub struct Ladder {
    pub(super) state: Arc<LadderState>,
    thresholds: Thresholds,
    /// Given as `retry-after` when no deployment says when it returns.
    default_wait: Duration,
    pub(crate) statics: Vec<StaticResponse>,
    pub(super) router: Arc<ModelRouter>,
    /// `[models.X] degraded_max_output_tokens`, by model.
    output_caps: HashMap<String, u64>,
    metrics: Metrics,
}

/// A model's level now and when it is expected back.
pub struct Reading {
    pub assessment: Assessment,
    pub outlook: Outlook,
    pub retry_after: Duration,
}

impl Ladder {
    pub fn new(
        config: &DegradationConfig,
        statics: Vec<StaticResponse>,
        models: &HashMap<String, ModelSettings>,
        state: Arc<LadderState>,
        router: Arc<ModelRouter>,
        metrics: Metrics,
    ) -> Self {
        Self {
            state,
            thresholds: Thresholds {
                cached: config.cached_after,
                static_only: config.static_after,
                maintenance: config.maintenance_after,
            },
            default_wait: config.retry_after,
            statics,
            router,
            output_caps: models
                .iter()
                .filter_map(|(name, model)| Some((name.clone(), model.degraded_max_output_tokens?)))
                .collect(),
            metrics,
        }
    }

    /// The max output tokens of `model`'s calls while it is degraded.
    pub(crate) fn output_cap(&self, model: &str) -> Option<u64> {
        self.output_caps.get(model).copied()
    }

    /// Assesses `route`'s level now; logs and exports a change.
    pub fn read(&self, route: &ModelRoute, now: Instant) -> Reading {
        let outlook = self.outlook(route, now);
        let (assessment, change) = self
            .state
            .observe(&route.name, outlook, &self.thresholds, now);
        self.metrics
            .degradation_level
            .with_label_values(&[&*route.name])
            .set(i64::from(assessment.level.number()));
        if let Some(change) = change {
            tracing::warn!(
                model = %route.name,
                from = change.from.number(),
                to = change.to.number(),
                reason = %change.reason,
                "degradation level changed"
            );
        }
        let retry_after = match outlook {
            Outlook::Down {
                earliest: Some(earliest),
            } => earliest.saturating_duration_since(now),
            _ => self.default_wait,
        };
        Reading {
            assessment,
            outlook,
            retry_after: retry_after.max(Duration::from_secs(1)),
        }
    }

    /// The model's own deployments first, then its fallbacks'.
    fn outlook(&self, route: &ModelRoute, now: Instant) -> Outlook {
        let own = scan(route.backends(), now);
        if own.ready {
            return Outlook::Ready;
        }
        let mut trial = own.trial;
        let mut earliest = own.earliest;
        for name in &route.fallbacks {
            let Some(fallback) = self.router.route(name) else {
                continue;
            };
            let seen = scan(fallback.backends(), now);
            if seen.ready {
                return Outlook::FallbackReady;
            }
            trial |= seen.trial;
            earliest = earlier(earliest, seen.earliest);
        }
        if trial {
            Outlook::Trial
        } else {
            Outlook::Down { earliest }
        }
    }

    /// Every model the router serves, by name.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<ModelRoute>> {
        self.router
            .model_names()
            .iter()
            .filter_map(|name| self.router.route(name))
    }

    /// The model `name`, if the router serves it.
    pub fn route(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.router.route(name)
    }

    /// An operator's level for `model` (`None`: back to the automatic one).
    pub fn force(&self, model: &str, level: Option<Level>) {
        self.state.force(model, level);
    }

    /// Re-assesses every model on a timer a quarter of the shortest
    /// threshold long (50ms to 1s), until the snapshot's loops stop.
    pub fn watch(self: &Arc<Self>, loops: &Tasks) {
        let shortest = [
            self.thresholds.cached,
            self.thresholds.static_only,
            self.thresholds.maintenance,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(4));
        let period = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let ladder: Weak<Self> = Arc::downgrade(self);
        let stop = loops.clone();
        loops.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stop.stopping() => return,
                }
                let Some(ladder) = ladder.upgrade() else {
                    return;
                };
                let now = Instant::now();
                for route in ladder.routes() {
                    ladder.read(route, now);
                }
            }
        });
    }
}

struct Seen {
    ready: bool,
    trial: bool,
    earliest: Option<Instant>,
}

/// Whether any backend takes calls (`ready`: with a closed circuit), or
/// would take a trial call, or when the first returns.
fn scan<'a>(backends: impl Iterator<Item = &'a Arc<Backend>>, now: Instant) -> Seen {
    let mut seen = Seen {
        ready: false,
        trial: false,
        earliest: None,
    };
    for backend in backends {
        match backend.health.usable(now) {
            Ok(()) if backend.health.breaker_state() == BreakerState::Closed => {
                seen.ready = true;
                return seen;
            }
            Ok(()) => seen.trial = true,
            Err(unusable) => seen.earliest = earlier(seen.earliest, Some(unusable.until())),
        }
    }
    seen
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
