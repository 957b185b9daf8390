//! Shutdown's signals: "draining" (SIGTERM came: readiness is false and
//! HTTP/1 answers close their connections) and "the grace period is over"
//! (open streams end). Plain atomic flags: relays and connections check them
//! on every poll or answer, so they must cost no lock (a shared
//! `CancellationToken` takes a mutex per check and per waiter).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag raised once, read lock-free.
#[derive(Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

/// Raised when the shutdown grace period is over.
pub type Cut = Flag;

/// Raised when shutdown begins.
pub type Draining = Flag;

/// Raised when start-up work that readiness waits for is done.
pub type Warmed = Flag;

impl Flag {
    pub fn raised() -> Self {
        let flag = Self::default();
        flag.fire();
        flag
    }

    pub fn fire(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_fired(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
