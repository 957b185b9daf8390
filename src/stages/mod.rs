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

/// Records a stage's decision on the call's trace span, when one is being
/// recorded: an event `name` at this moment, with the time the stage took
/// since `started` and the attributes `attrs` makes (only then).
pub(crate) fn trace_event(
    request: &axum::extract::Request,
    name: &'static str,
    started: tokio::time::Instant,
    attrs: impl FnOnce() -> Vec<crate::infra::otel::Attr>,
) {
    if let Some(span) = request.extensions().get::<crate::infra::otel::LiveSpan>() {
        span.record(|data| {
            let mut attrs = attrs();
            attrs.push(("sluice.duration_s", started.elapsed().as_secs_f64().into()));
            data.event(name, attrs);
        });
    }
}
