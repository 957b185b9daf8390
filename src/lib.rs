//! Sluice: an HTTP gateway for OpenAI-compatible APIs.
//!
//! A request comes in through an adapter (HTTP, or the internal adapter
//! for work Sluice does on a key's behalf), crosses the stages, and leaves
//! through the dispatcher to an upstream. The modules follow that path, and
//! every import points down this list (`scripts/module_graph.py` checks it;
//! `docs/architecture.md` draws the graph):
//!
//! - `server`: the composition root: connections, the outer layers, the
//!   live config snapshot, every `/admin` route, the HTTP and internal
//!   adapters.
//! - `stages`: layers 5 to 9, one thin adapter per stage.
//! - `dispatch`: the innermost service: the attempts in steps (choose,
//!   gate, attempt, outcome) and the relay of the answer.
//! - `call`: what the stages of a call share (`Call`, `ApiRequest`).
//! - `mock`: the in-process mock provider, registered by `server`.
//! - `engines`: state and logic (keys, tokens, limits, cache, degradation,
//!   policy, routing, queue, metering, ledger, jobs), knowing nothing of
//!   the `Call` or the stages.
//! - `upstream`: the HTTP client to providers and the local-provider trait.
//! - `infra`: telemetry, metrics, the Redis and SQL stores, the SSE grammar.
//! - `vocab`: the leaf vocabulary every layer names (`Identity`,
//!   `Endpoint`, `Usage`, `GatewayError`...).
//! - `config`: the typed config, one file per section.
//! - `util`: leaf helpers (tasks, shutdown signals, headers, durations).
//! - `anthropic`: Anthropic's Messages API and its translation to and from
//!   chat completions, plain data to plain data (a leaf).
//! - `cli`: the `check` and `healthcheck` commands.

pub mod anthropic;
pub mod call;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod engines;
pub mod infra;
pub mod mock;
pub mod server;
pub mod stages;
pub mod upstream;
pub mod util;
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
    pub use crate::config::expand::expand_tree;
    pub use crate::dispatch::hide_usage::UsageHider;
    pub use crate::dispatch::realtime::bridge::usage_of as realtime_usage;
    pub use crate::dispatch::realtime::handshake::check as websocket_handshake;
    pub use crate::engines::auth::presented_key;
    pub use crate::engines::cache::entry::complete_events;
    pub use crate::engines::cache::entry::{Entry, Recorded, Replay, replay};
    pub use crate::engines::jobs::batch::line::output_line;
    pub use crate::engines::jobs::batch::run::prefix_key;
    pub use crate::engines::jobs::batch::validate::{
        Lines, MAX_LINE_BYTES, Models, Read, check_line,
    };
    pub use crate::engines::request::parse::{
        affinity_key, apply, check_content_type, parse_head, with_usage_requested,
    };
    pub use crate::engines::request::paths::classify;
    pub use crate::engines::routing::hints::remaining;
    pub use crate::mock::fuzzing::{MockSession, schema_in};
    pub use crate::stages::request_reader::realtime::model_of as realtime_model;
}
