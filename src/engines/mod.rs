//! The engines: each one concern's state and logic, below the stages that
//! call them. None imports `call` or `stages`; among themselves, imports
//! point down this list.
//!
//! - `jobs`: the Files and Batch API's store and runners, asynchronous jobs.
//! - `limits`: RPM and TPM buckets, deployment quotas.
//! - `cache`, `degrade`: the response cache; the degradation ladder.
//! - `ledger`, `routing`: the usage ledger; deployments, health, choice.
//! - `auth`, `internal`, `metering`, `policy`, `queue`, `request`: keys to
//!   identities; the internal adapter's contract; cost and budgets;
//!   virtual models; admission queues; the request grammar.
//! - `keys`, `tokens`: runtime keys; token counts and the parsed body.

pub mod auth;
pub mod cache;
pub mod degrade;
pub mod internal;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod metering;
pub mod policy;
pub mod queue;
pub mod request;
pub mod routing;
pub mod tokens;
