//! What the stages of a proxied call share, and their contract. This sits
//! above the engines: a `Call` carries engine state (the model's route with
//! its deployments, the limiter's quota handle), and the engines never see
//! it; each stage reads the call and hands its engine plain values.
//!
//! A call crosses the stages of `server::stack` (layers 5 to 9, then the
//! dispatcher) as one request extension, [`Call`]: each stage reads what the
//! stages before it put there and adds its own part. What flows back out
//! rides on the response: extensions the outer layers read ([`ServedBy`],
//! [`UpstreamTime`], [`StreamEnded`], the caller's `Arc<Identity>`) and
//! headers. Every stage is written one way (`crate::stages::Stage`).
//!
//! | # | stage | reads | adds |
//! |---|-------|-------|------|
//! | 5 | `stages::Entry` | `Authorization` / `api-key` (HTTP), or an `Arc<Identity>` the internal adapter attached | the [`Call`] with its `identity`; on the response the `Arc<Identity>` (access log), `AuthRefused` on a refusal (401/429) |
//! | 5b| `stages::AsyncIntake` | `Prefer` / `x-sluice-async`, `identity`, the body, `x-sluice-callback` | a job asked to run later answers `202` here; nothing else is touched |
//! | 6 | `stages::RequestReader` | `identity`, the body, `x-sluice-priority` | `request` ([`ApiRequest`]: endpoint, body, parsed view, route, priority, ...); response headers `x-sluice-variant`, `x-sluice-degraded-from` |
//! | 6b| `stages::RecordUsage` | `identity`, `request`; `x-request-id`, `x-sluice-tag` | a usage hook; reads the response's status, [`ServedBy`], [`CACHE_STATUS`], `x-upstream-request-id` |
//! | 6c| `stages::CheckLevel` | `request.route` (the model's level: `crate::engines::degrade`) | `request.body`/`view` (`degraded_max_output_tokens` at level 1, or a trial call at 2-3); level 4: 503 `maintenance` here, or 202 and an async job for a `queue_in_maintenance` key; levels 2-3: `degraded`, and `x-sluice-degraded: cached` on a success the cache gave |
//! | 7 | `stages::Cache` | `identity` (cache flag, scope), `request`; `Cache-Control` | a hit answers here with [`ServedBy`] (deployment `cache`), `age`, `x-sluice-coalesced`; [`CACHE_STATUS`] on every answer |
//! | 7a| `stages::Fallback` | `degraded`, `request` | a `degraded` call the cache did not answer ends here: a static answer (`x-sluice-degraded: static`, never cached or billed) or 503 `service_degraded` with `retry-after` |
//! | 7b| `stages::EnforceBudgets` | `identity` (key, org) | a usage hook that bills the call's cost; 429 when spent |
//! | 8 | `stages::RateLimit` | `identity`, `request` (model, view, priority) | `backend` (the first attempt's deployment, its quota charged with the key's in one step), `quotas` (the handle the dispatcher's gate charges each attempt with), a settlement hook; `x-ratelimit-*` headers of the key; 429 when over |
//! | 9 | `stages::Admit` | `identity`, `request.priority` | a `[server] max_concurrency` slot, held until the response body ends |
//! | - | `dispatch::Dispatcher` | the whole [`Call`] (it takes it) | finishes `hooks` once; [`ServedBy`], [`UpstreamTime`], [`StreamEnded`], `x-sluice-deployment`, `x-sluice-attempts`, `x-sluice-model`, `x-sluice-fallback-from`, `x-sluice-hedge`, [`Hedged`](crate::vocab::Hedged) |
//!
//! Beside the `Call`, layer 4 puts the call's OpenTelemetry span in the
//! request's extensions when tracing is on (`infra::otel::LiveSpan`): the
//! cache, rate-limit, admission and level stages add their decisions to it
//! (`stages::trace_event`), 6b records its trace id in the ledger row, and
//! the dispatcher makes each attempt a child span of it.
//!
//! Routes that are not proxied (`/v1/models`) carry a [`Call`] whose
//! `request` is `None`: stages 6b to 9 let them through untouched.

mod request;

use std::sync::Arc;

pub use self::request::ApiRequest;
pub use crate::config::Priority;
pub use crate::vocab::{CACHE_STATUS, ServedBy, StreamEnded, StreamOutcome, UpstreamTime};

use crate::engines::limits::DeploymentQuotas;
use crate::engines::routing::Backend;
use crate::vocab::Degraded;
use crate::vocab::Identity;
use crate::vocab::UsageHooks;

/// One proxied call as the stages see it (see the module doc for who sets
/// which part).
#[derive(Clone)]
pub struct Call {
    /// Who calls (layer 5).
    pub identity: Arc<Identity>,
    /// The request read and checked once (layer 6); `None` on routes that
    /// are not proxied.
    pub request: Option<ApiRequest>,
    /// Observers of the call's token usage, finished once by the dispatcher.
    pub hooks: UsageHooks,
    /// The deployment the rate limiter admitted the call on (layer 8): the
    /// dispatcher's first attempt.
    pub backend: Option<Arc<Backend>>,
    /// The rate limiter's charges on deployments, for each attempt.
    pub quotas: DeploymentQuotas,
    /// Set at degradation levels 2 and 3 (layer 6c): only the cache, or
    /// layer 7a's static answer, may serve the call.
    pub degraded: Option<Degraded>,
}

impl Call {
    pub fn new(identity: Arc<Identity>) -> Self {
        Self {
            identity,
            request: None,
            hooks: UsageHooks::default(),
            backend: None,
            quotas: DeploymentQuotas::default(),
            degraded: None,
        }
    }

    /// A proxied call and its request; `None` on other routes.
    pub fn proxied(extensions: &http::Extensions) -> Option<(&Self, &ApiRequest)> {
        let call = extensions.get::<Self>()?;
        Some((call, call.request.as_ref()?))
    }

    /// The same, to add to.
    pub fn proxied_mut(extensions: &mut http::Extensions) -> Option<&mut Self> {
        extensions
            .get_mut::<Self>()
            .filter(|call| call.request.is_some())
    }
}
