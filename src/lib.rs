//! Sluice: an HTTP gateway for OpenAI-compatible APIs.
//!
//! Module map (dependencies point down this list; `config`, `error` are used by all):
//! - `server`: HTTP serving and the layer stack (`server::stack` lists it).
//! - `call`, `stage`: what the stages of a call share, and how one is written.
//! - `auth`: virtual keys -> `Identity`.
//! - `dispatch`: the innermost service: reads the request, routes, relays.
//! - `routing`: model -> priority groups of deployments, weighted choice.
//! - `upstream`: provider URLs and auth, the HTTP client, the mock provider.

pub mod auth;
pub mod cache;
pub mod call;
pub mod check;
pub mod config;
pub mod degrade;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod go_duration;
pub mod headers;
pub mod healthcheck;
pub mod internal;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod metering;
pub mod metrics;
pub mod mock;
pub mod policy;
pub mod queue;
pub mod redis;
pub mod request;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod sql;
pub mod sse;
pub mod stages;
pub mod storage_dirs;
pub mod sync_layer;
pub mod tasks;
pub mod telemetry;
pub mod tokens;
pub mod upstream;
pub mod vocab;

/// Stream spellings and a reference SSE parser, shared with the integration
/// tests' fake upstream.
#[cfg(test)]
#[allow(
    dead_code,
    reason = "the integration tests use parts the unit tests do not"
)]
#[path = "../tests/common/spelling.rs"]
mod spelling;
/// The parsers the fuzz targets in `fuzz/` drive directly, re-exported from
/// the private modules they live in. Not an API: it exists so fuzzing needs
/// no copies of the code it checks.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cache::entry::complete_events;
    pub use crate::cache::entry::{Entry, Recorded, Replay, replay};
    pub use crate::config::expand::expand_tree;
    pub use crate::dispatch::hide_usage::UsageHider;
    pub use crate::jobs::batch::line::output_line;
    pub use crate::jobs::batch::run::prefix_key;
    pub use crate::jobs::batch::validate::{Lines, MAX_LINE_BYTES, Models, Read, check_line};
    pub use crate::request::parse::{
        affinity_key, apply, check_content_type, parse_head, with_usage_requested,
    };
    pub use crate::routing::hints::remaining;
}
