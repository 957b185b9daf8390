//! The ladder's live state per model name, in the registries: a reload
//! keeps how long a model has been down and what the operator forced.

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::vocab::Level;

/// What routing says about a model and its fallbacks at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlook {
    /// One of the model's own deployments takes calls.
    Ready,
    /// Only a fallback model's deployment takes calls (reduced quality).
    FallbackReady,
    /// Nothing takes calls but a circuit would let a trial call through.
    Trial,
    /// Nothing takes calls; the earliest deployment returns at `earliest`.
    Down { earliest: Option<Instant> },
}

/// The thresholds of `[degradation]`, as durations since the model went down.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub cached: Option<Duration>,
    pub static_only: Option<Duration>,
    pub maintenance: Option<Duration>,
}

impl Thresholds {
    /// The highest level whose threshold `down_for` reached; 1 before any.
    fn level(&self, down_for: Duration) -> Level {
        let reached = |threshold: Option<Duration>| threshold.is_some_and(|t| down_for >= t);
        if reached(self.maintenance) {
            Level::Maintenance
        } else if reached(self.static_only) {
            Level::Static
        } else if reached(self.cached) {
            Level::CachedOnly
        } else {
            Level::Reduced
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ModelState {
    /// Since when neither the model nor a fallback had a ready deployment.
    down_since: Option<Instant>,
    forced: Option<Level>,
    /// The level last reported (logged and in the metric).
    shown: Level,
}

/// One model's level as computed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    pub level: Level,
    pub automatic: Level,
    pub forced: Option<Level>,
    pub down_for: Option<Duration>,
}

/// A change of a model's level, to log and export.
pub struct Change {
    pub from: Level,
    pub to: Level,
    pub reason: String,
}

/// Every model's ladder state, shared by all snapshots.
#[derive(Default)]
pub struct LadderState {
    models: DashMap<String, ModelState>,
}

impl LadderState {
    /// Folds what routing says now into `model`'s state; returns its level
    /// and, when the level moved, the change.
    pub fn observe(
        &self,
        model: &str,
        outlook: Outlook,
        thresholds: &Thresholds,
        now: Instant,
    ) -> (Assessment, Option<Change>) {
        let mut state = self.models.entry(model.to_owned()).or_default();
        let automatic = match outlook {
            Outlook::Ready => {
                state.down_since = None;
                Level::Full
            }
            Outlook::FallbackReady => {
                state.down_since = None;
                Level::Reduced
            }
            Outlook::Trial | Outlook::Down { .. } => {
                let since = *state.down_since.get_or_insert(now);
                thresholds.level(now.saturating_duration_since(since))
            }
        };
        let level = state.forced.unwrap_or(automatic);
        let assessment = Assessment {
            level,
            automatic,
            forced: state.forced,
            down_for: state
                .down_since
                .map(|since| now.saturating_duration_since(since)),
        };
        let change = (level != state.shown).then(|| Change {
            from: state.shown,
            to: level,
            reason: reason(&assessment, outlook),
        });
        state.shown = level;
        (assessment, change)
    }

    /// Forces `model`'s level, or clears the override with `None`.
    pub fn force(&self, model: &str, level: Option<Level>) {
        self.models.entry(model.to_owned()).or_default().forced = level;
    }
}

fn reason(assessment: &Assessment, outlook: Outlook) -> String {
    if let Some(forced) = assessment.forced {
        return format!("forced to {} by the operator", forced.number());
    }
    match (outlook, assessment.down_for) {
        (Outlook::Ready, _) => "a deployment is usable".to_owned(),
        (Outlook::FallbackReady, _) => "only a fallback model is usable".to_owned(),
        (_, Some(down_for)) => format!("no usable deployment for {}ms", down_for.as_millis()),
        (_, None) => "no usable deployment".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        cached: Some(Duration::from_secs(30)),
        static_only: Some(Duration::from_secs(120)),
        maintenance: None,
    };

    #[tokio::test(start_paused = true)]
    async fn climbs_with_time_down_and_returns_when_ready() {
        let state = LadderState::default();
        let down = Outlook::Down { earliest: None };
        let (a, change) = state.observe("m", down, &T, Instant::now());
        assert_eq!(a.level, Level::Reduced);
        assert_eq!(change.map(|c| c.from), Some(Level::Full));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            state.observe("m", down, &T, Instant::now()).0.level,
            Level::CachedOnly
        );
        tokio::time::advance(Duration::from_secs(90)).await;
        let (a, change) = state.observe("m", Outlook::Trial, &T, Instant::now());
        assert_eq!(a.level, Level::Static, "a trial does not reset the clock");
        assert!(change.is_some());
        let (a, change) = state.observe("m", Outlook::Ready, &T, Instant::now());
        assert_eq!(a.level, Level::Full);
        assert_eq!(
            change.map(|c| c.reason),
            Some("a deployment is usable".to_owned())
        );
        assert_eq!(a.down_for, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_override_wins_until_cleared() {
        let state = LadderState::default();
        state.force("m", Some(Level::Maintenance));
        let (a, change) = state.observe("m", Outlook::Ready, &T, Instant::now());
        assert_eq!((a.level, a.automatic), (Level::Maintenance, Level::Full));
        assert!(change.is_some_and(|c| c.reason.contains("operator")));
        state.force("m", None);
        assert_eq!(
            state
                .observe("m", Outlook::Ready, &T, Instant::now())
                .0
                .level,
            Level::Full
        );
    }
}
