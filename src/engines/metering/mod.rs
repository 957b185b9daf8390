//! Metering: what each call cost, and spend budgets built on it.

mod budgets;
mod period;
mod pricing;

pub use budgets::{Budgets, Clock, SpendState, SystemClock};
pub use period::{Period, date_ms, from_unix_ms, rfc3339, unix_ms};
pub use pricing::Pricing;
