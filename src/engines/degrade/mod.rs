//! The degradation ladder, per model: what a model still answers while its
//! deployments (and its fallbacks') are unusable.
//!
//! | level | name | behaviour |
//! |---|---|---|
//! | 0 | full | normal service |
//! | 1 | reduced | the model's own deployments are out: fallbacks and `cheaper` serve (routing does this); `degraded_max_output_tokens` clamps output |
//! | 2 | cached only | the cache answers, also with entries past their TTL (`stale_for`) and looser semantic matches (`degraded_threshold`); a miss gets 503 `service_degraded` with `retry-after` |
//! | 3 | static | as 2, but a miss gets a matching `[[static_responses]]` answer, chat or Responses (`x-sluice-degraded: static`) |
//! | 4 | maintenance | 503 `maintenance` with `retry-after` before anything else runs, or, for a `queue_in_maintenance` key, an async job (202) the runner holds until the level drops |
//!
//! The level is automatic (how long nothing was usable, `[degradation]`)
//! unless the operator forced one (`POST /admin/models/{model}/level`).
//! While a circuit would let a trial call through, automatic levels 2 and
//! 3 let calls reach the upstream, so a recovered deployment is noticed.
//!
//! Two stages carry it (see `crate::call`): [`CheckLevel`] (6c) reads the
//! level and marks the call [`Degraded`]; [`Fallback`] (7a), right behind
//! the cache, answers a marked call the cache did not: nothing marked
//! reaches budgets, rate limits or the dispatcher.

mod ladder;
mod state;
pub mod statics;

pub use ladder::Ladder;
pub use state::{LadderState, Outlook};
