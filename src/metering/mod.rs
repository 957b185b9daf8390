//! Metering: what each call cost. (Budgets and the usage ledger build on it.)

mod pricing;

pub use pricing::Pricing;
