//! Asynchronous requests: a proxied POST sent with `Prefer: respond-async`
//! (or `x-sluice-async: true`) is answered `202` at once with a job id and
//! a `Location`; the job is replayed later through the internal adapter as
//! the key that asked, its answer kept until `[async_requests]
//! expire_after` and, with `x-sluice-callback`, POSTed to an allowed host.
//!
//! - `ask`: reading the request's preference and callback URL.
//! - `intake`: layer 5b, which records the job and answers `202`.
//! - `record`: the stored job and the statements that move it along.
//! - `runner`: claims, runs and answers jobs; sweeps expired ones.
//! - `callback`: delivers a finished job to its callback URL.
//! - `api`: `GET /v1/async/{id}`; `admin`: every key's jobs, and cancel.

pub mod admin;
pub mod api;
pub(crate) mod ask;
mod callback;
pub(crate) mod record;
mod runner;

pub use runner::start;
