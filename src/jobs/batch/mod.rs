//! The Batch API, run by the gateway for any upstream.

pub mod record;
pub mod runner;
