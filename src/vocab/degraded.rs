//! The degradation ladder's levels, and the mark a degraded call carries.

use std::time::Duration;

/// The response header of an answer served while degraded: `cached` or `static`.
pub const DEGRADED: &str = "x-sluice-degraded";

/// A model's place on the ladder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    #[default]
    Full,
    Reduced,
    CachedOnly,
    Static,
    Maintenance,
}

impl Level {
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(number: u64) -> Option<Self> {
        Some(match number {
            0 => Self::Full,
            1 => Self::Reduced,
            2 => Self::CachedOnly,
            3 => Self::Static,
            4 => Self::Maintenance,
            _ => return None,
        })
    }
}

/// Set on a call by the `CheckLevel` stage at level 2 or 3: only the cache (or a
/// static answer) may serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degraded {
    pub level: Level,
    /// When the model is expected back, for `retry-after`.
    pub retry_after: Duration,
}
