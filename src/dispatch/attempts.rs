//! Retries and failover: a call's attempts, one after another. Each request
//! deposits into its model's retry budget; each attempt is chosen
//! (`choose`), passes the gate (`gate`: quota, slot, breaker), is sent and
//! judged (`attempt`), and its outcome recorded here. A retry goes to
//! another usable deployment when there is one (at once), else to the same
//! one after its hint or a jittered backoff; a model that cannot serve
//! hands the call down its fallback chain.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::attempt::{adapt, attempt};
use super::choose::{self, Choice, holds};
use super::gate::{self, Gated, Pass};
pub use super::outcome::{Failure, FailureKind, Reply, Success};
use super::outcome::{Outcome, attempt_end};
use crate::config::{Priority, RetryConfig};
use crate::error::GatewayError;
use crate::limits::{AttemptEnd, DeploymentQuotas};
use crate::metrics::Metrics;
use crate::queue::held_while_streaming;
use crate::routing::{Backend, ModelRoute, ModelRouter};
use crate::upstream::{UpstreamClient, UpstreamRequest};

/// Everything an attempt needs, shared by all attempts of one request.
pub struct Call {
    pub client: UpstreamClient,
    pub retry: Arc<RetryConfig>,
    pub router: Arc<ModelRouter>,
    pub route: Arc<ModelRoute>,
    pub request: UpstreamRequest,
    pub affinity: Option<u64>,
    pub deadline: Instant,
    /// Non-streamed calls read the whole body inside the attempt, so a body
    /// that breaks off can still be retried.
    pub read_body: bool,
    /// A streamed call: a 2xx must be `text/event-stream`.
    pub expect_sse: bool,
    /// Largest whole body read (`[server] max_response_bytes`).
    pub max_response_bytes: usize,
    /// For deployment queues: the request's class and caller.
    pub priority: Priority,
    pub caller: Arc<str>,
    pub metrics: Metrics,
    /// Charges each attempt's deployment quota (see `crate::limits::quotas`).
    pub quotas: DeploymentQuotas,
}

/// Where a call's attempts stand.
pub(super) struct Progress {
    /// The deployment the next attempt must use (the rate limiter's pick).
    pub next: Option<Arc<Backend>>,
    pub tried: Vec<Arc<Backend>>,
    /// Deployments whose quota had no room for this call: not tried again.
    pub skipped: Vec<Arc<Backend>>,
    /// When the soonest skipped quota has room again.
    pub quota_free_at: Option<Instant>,
    pub attempts: u32,
    /// Attempts on the current model: each model down the fallback chain
    /// gets its own `max_attempts`.
    pub model_attempts: u32,
    /// The last retryable failure and its hint.
    pub last: Option<(FailureKind, Option<Duration>)>,
    pub maybe_produced: bool,
    pub upstream_time: Duration,
    fallbacks: std::vec::IntoIter<Arc<str>>,
}

impl Progress {
    fn new(call: &Call, first: Option<Arc<Backend>>) -> Self {
        Self {
            next: first,
            tried: Vec::with_capacity(call.retry.max_attempts as usize),
            skipped: Vec::new(),
            quota_free_at: None,
            attempts: 0,
            model_attempts: 0,
            last: None,
            maybe_produced: false,
            upstream_time: Duration::ZERO,
            fallbacks: call.route.fallbacks.clone().into_iter(),
        }
    }

    pub fn tried(&self, backend: &Arc<Backend>) -> bool {
        holds(&self.tried, backend)
    }

    /// Moves the call to the next model of its fallback chain that exists;
    /// `false` at the chain's end.
    pub fn fall_back(&mut self, call: &mut Call) -> bool {
        let Some(route) = self
            .fallbacks
            .find_map(|name| call.router.route(&name).cloned())
        else {
            return false;
        };
        tracing::info!(from = %call.route.name, to = %route.name, "falling back to another model");
        call.request.client_model = route.name.clone();
        // A request to this model, as far as its retry budget goes.
        route.budget.deposit();
        call.route = route;
        self.model_attempts = 0;
        true
    }

    fn failure(&mut self, error: FailureKind) -> Failure {
        Failure {
            error,
            attempts: self.attempts,
            maybe_produced: self.maybe_produced,
        }
    }

    /// The call ran out of attempts or time: its last failure, else a timeout.
    fn exhausted(mut self, call: &Call) -> Failure {
        let error = self.last.take().map_or_else(
            || {
                FailureKind::Gateway(GatewayError::UpstreamTimeout {
                    deployment: call.route.name.to_string(),
                    timeout_ms: call
                        .deadline
                        .saturating_duration_since(Instant::now())
                        .as_millis(),
                })
            },
            |(failure, _)| failure,
        );
        self.failure(error)
    }
}

pub async fn run(mut call: Call, first: Option<Arc<Backend>>) -> Result<Success, Failure> {
    call.route.budget.deposit();
    let mut progress = Progress::new(&call, first);
    // Bounded: each pass either makes an attempt or moves down the fallback chain.
    let models = 1 + call.route.fallbacks.len();
    for _ in 0..(call.retry.max_attempts as usize * models + models + 8) * 2 {
        let now = Instant::now();
        if now >= call.deadline {
            break;
        }
        let backend = match choose::next(&mut call, &mut progress, now).await {
            Choice::Try(backend) => backend,
            Choice::Again => continue,
            Choice::Fail(failure) => return Err(progress.failure(failure)),
            Choice::GiveUp => break,
        };
        let pass = match gate::pass(&call, &mut progress, &backend, now).await {
            Gated::Passed(pass) => pass,
            Gated::Skipped => continue,
            Gated::Failed(failure) => return Err(progress.failure(failure)),
        };
        match run_attempt(&call, &mut progress, backend, pass).await {
            Some(result) => return result,
            None => continue,
        }
    }
    Err(progress.exhausted(&call))
}

/// Sends one attempt and records its outcome; `Some` when the call ends.
async fn run_attempt(
    call: &Call,
    progress: &mut Progress,
    backend: Arc<Backend>,
    pass: Pass,
) -> Option<Result<Success, Failure>> {
    progress.attempts += 1;
    progress.model_attempts += 1;
    progress.tried.push(backend.clone());
    let started = Instant::now();
    let outcome = attempt(call, &backend, pass.permit).await;
    let spent = started.elapsed();
    progress.upstream_time += spent;
    call.metrics
        .upstream_duration
        .with_label_values(&[&*backend.deployment.name])
        .observe(spent.as_secs_f64());
    if let Some(limit) = &backend.adaptive {
        adapt(limit, &outcome, spent, started, &call.metrics, &backend);
    }
    let end = attempt_end(&outcome);
    call.quotas.end(pass.charged, end);
    progress.maybe_produced |= end == AttemptEnd::MaybeProduced;
    match outcome {
        Outcome::Success(mut success) => {
            success.attempts = progress.attempts;
            success.model = call.route.name.clone();
            success.upstream_time = progress.upstream_time;
            if !Arc::ptr_eq(&progress.tried[0], &backend) {
                call.metrics
                    .failovers
                    .with_label_values(&[&*call.route.name])
                    .inc();
            }
            if let (Some(slot), Reply::Stream(body)) = (pass.slot, &mut success.body) {
                let inner = std::mem::replace(body, futures_util::stream::empty().boxed());
                *body = held_while_streaming(inner, slot).boxed();
            }
            Some(Ok(success))
        }
        Outcome::Final { failure, .. } => Some(Err(progress.failure(failure))),
        Outcome::Retryable { failure, hint } => {
            tracing::warn!(
                deployment = %backend.deployment.name,
                model = %call.route.name,
                attempt = progress.attempts,
                error = %failure,
                "upstream attempt failed; retrying if the retry policy allows"
            );
            progress.last = Some((failure, hint));
            None
        }
    }
}
