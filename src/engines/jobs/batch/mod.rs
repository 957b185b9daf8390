//! The Batch API, run by the gateway for any upstream: `api` answers
//! `/v1/batches`; `runner` claims batches with a lease and drives their
//! status; `validate` checks the input file; `run` sends lines through the
//! internal adapter at the `batch` class with an adaptive limit; `line` is
//! one line and what its answer means; `finalize` writes the output and
//! error files; `record` is the stored batch and its API object;
//! `upstream` forwards a batch to a provider's Batch API and mirrors it
//! there, moving its files with `upstream_files`.

pub mod api;
mod finalize;
mod lease;
pub(crate) mod line;
pub mod record;
pub(crate) mod run;
pub mod runner;
mod upstream;
mod upstream_files;
pub(crate) mod validate;
