//! `[queue]` and the priority classes.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Request priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Critical,
    Realtime,
    Standard,
    Batch,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Self::Critical,
        Self::Realtime,
        Self::Standard,
        Self::Batch,
        Self::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Realtime => "realtime",
            Self::Standard => "standard",
            Self::Batch => "batch",
            Self::Low => "low",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Requests waiting for a slot, all classes together; more get 503.
    pub max_depth: usize,
    /// How long a request may wait for a slot before it gets 503.
    #[serde(with = "duration::serde_duration")]
    pub max_wait: Duration,
    /// Per-class overrides of `max_wait`, e.g. `{ batch = "10m" }`.
    #[serde(with = "duration::serde_map")]
    pub max_wait_by_class: HashMap<Priority, Duration>,
    /// Every Nth slot goes to the longest-waiting request of any class, so
    /// lower classes still move under constant higher-class load.
    pub starvation_every: u32,
    /// Expected wait past which `standard` requests go to `[models.X] cheaper`.
    #[serde(with = "duration::serde_option")]
    pub degrade_after: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_depth: 1000,
            max_wait: Duration::from_secs(30),
            max_wait_by_class: HashMap::new(),
            starvation_every: 10,
            degrade_after: None,
        }
    }
}

impl QueueConfig {
    pub fn max_wait(&self, class: Priority) -> Duration {
        self.max_wait_by_class
            .get(&class)
            .copied()
            .unwrap_or(self.max_wait)
    }
}
