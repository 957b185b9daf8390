//! What both engines take and return.

use std::sync::Arc;

use super::bucket::Bucket;
use super::gcra::Standing;

/// Units to take from one bucket.
#[derive(Clone, Copy)]
pub struct Charge<'a> {
    pub bucket: &'a Arc<Bucket>,
    pub units: u64,
}

/// An engine's answer. `Ok(chosen)`: every required bucket was charged, plus
/// those of candidate `chosen` (the first with room), if candidates were given.
pub struct Decision {
    pub result: Result<Option<usize>, Refused>,
    /// Each required bucket in order: after the charge, or as it stands when refused.
    pub standings: Vec<Standing>,
}

/// `position` counts the required charges first, then the candidates' in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    Wait {
        position: usize,
        wait_secs: f64,
        used: u64,
    },
    Never {
        position: usize,
    },
}

impl Refused {
    pub fn wait_secs(&self) -> f64 {
        match self {
            Self::Wait { wait_secs, .. } => *wait_secs,
            Self::Never { .. } => f64::INFINITY,
        }
    }

    pub fn position(&self) -> usize {
        match self {
            Self::Wait { position, .. } | Self::Never { position } => *position,
        }
    }
}

/// The limiter store could not answer (Redis down or slow).
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate-limit store unavailable: {0}")]
pub struct StoreError(pub String);
