//! The "grace period is over" signal. A plain atomic flag: relays check it on
//! every poll, so it must cost no lock (a shared `CancellationToken` takes a
//! mutex per check and per waiter).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Default)]
pub struct Cut(Arc<AtomicBool>);

impl Cut {
    pub fn fire(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_fired(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
