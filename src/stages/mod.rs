//! The stages of a proxied call: layers 5 to 9 of `server::stack`, one thin
//! adapter each, named as in the stack table. A stage reads the [`Call`]
//! (`crate::call`), asks one engine, and writes its answer back on the call
//! or the response; the engines below know nothing of calls or stages.
//! How a stage is written, and how a route's stages run as one chain, is in
//! `chain`. What each stage reads and adds is tabled in `crate::call`.
//!
//! [`Call`]: crate::call::Call

mod admit;
mod async_intake;
mod cache;
mod chain;
mod check_level;
mod enforce_budgets;
mod entry;
mod job_owner;
mod rate_limit;
mod record_usage;
pub(crate) mod request_reader;

pub use admit::Admit;
pub use async_intake::AsyncIntake;
pub use cache::Cache;
pub(crate) use chain::chain;
pub use chain::{Next, Stage, StageLayer, Stages};
pub use check_level::{CheckLevel, Fallback};
pub use enforce_budgets::EnforceBudgets;
pub use entry::Entry;
pub use job_owner::JobOwner;
pub use rate_limit::RateLimit;
pub use record_usage::{Estimates, RecordUsage};
pub use request_reader::RequestReader;
