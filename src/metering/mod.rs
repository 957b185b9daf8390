//! Metering: what each call cost, and spend budgets built on it.

mod budgets;
mod layer;
mod period;
mod pricing;

pub use budgets::{Budgets, Clock, SystemClock};
pub use layer::enforce;
pub use period::{date_ms, rfc3339};
pub use pricing::Pricing;
