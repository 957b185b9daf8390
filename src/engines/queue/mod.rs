//! Admission control: concurrency limits with a fair priority queue in front
//! of them. A request that cannot start waits (holding no upstream
//! connection), and is told at once when it cannot be admitted in time.

mod admission;
mod scheduler;

pub use admission::{held_while_streaming, take_slot};
pub use scheduler::{Permit, Rejected, Scheduler};
