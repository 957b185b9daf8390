//! What every step of a call's attempts shares: the call as the attempts
//! see it, and where they stand.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::outcome::{Failure, FailureKind};
use crate::config::{Priority, RetryConfig};
use crate::engines::limits::DeploymentQuotas;
use crate::engines::routing::{Backend, ModelRoute, ModelRouter};
use crate::infra::metrics::Metrics;
use crate::upstream::{UpstreamClient, UpstreamRequest};
use crate::vocab::error::GatewayError;

/// Everything an attempt needs, shared by all attempts of one request
/// (cloned for a hedge's second leg).
#[derive(Clone)]
pub struct Outbound {
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
    /// Charges each attempt's deployment quota (see `crate::engines::limits::quotas`).
    pub quotas: DeploymentQuotas,
    /// The call's trace, when Sluice traces: each attempt is a span of it.
    pub trace: Option<Arc<super::trace::CallTracing>>,
    /// Whether the call may be sent twice: not when it stores what it
    /// makes upstream (a second, unpinned object would be left there).
    pub repeatable: bool,
    /// Set on both legs of a hedged call.
    pub legs: Option<Arc<Legs>>,
}

/// What a hedged call's two legs share: the deployment the first leg is
/// sending to (the hedge goes to another), and the attempts both made,
/// for the call's `x-sluice-attempts` when one leg is dropped.
#[derive(Default)]
pub struct Legs {
    sending: Mutex<Option<Arc<Backend>>>,
    attempts: AtomicU32,
}

impl Legs {
    pub fn set_sending(&self, backend: &Arc<Backend>) {
        if let Ok(mut sending) = self.sending.lock() {
            *sending = Some(backend.clone());
        }
    }

    pub fn sending(&self) -> Option<Arc<Backend>> {
        self.sending.lock().ok()?.clone()
    }

    /// Counts one more attempt of either leg: its number.
    pub fn attempt(&self) -> u32 {
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }
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
    /// Attempts an adaptive limit absorbed (concurrency push-back): they
    /// are not counted in `model_attempts`, up to `MAX_ABSORBED`.
    pub absorbed: u32,
    /// The last attempt was absorbed: the next is a retry that spends no
    /// attempt or budget, paced by its own backoff.
    pub absorbing: bool,
    /// The last retryable failure and its hint.
    pub last: Option<(FailureKind, Option<Duration>)>,
    pub maybe_produced: bool,
    pub upstream_time: Duration,
    fallbacks: std::vec::IntoIter<Arc<str>>,
}

/// The most push-backs an adaptive limit absorbs for one call: each cuts
/// the limit by a quarter, so this many in a row means the deployment
/// refuses whatever its concurrency; after them push-back spends attempts.
pub(super) const MAX_ABSORBED: u32 = 16;

impl Progress {
    pub fn new(call: &Outbound, first: Option<Arc<Backend>>) -> Self {
        Self {
            next: first,
            tried: Vec::with_capacity(call.retry.max_attempts as usize),
            skipped: Vec::new(),
            quota_free_at: None,
            attempts: 0,
            model_attempts: 0,
            absorbed: 0,
            absorbing: false,
            last: None,
            maybe_produced: false,
            upstream_time: Duration::ZERO,
            fallbacks: call.route.fallbacks.clone().into_iter(),
        }
    }

    /// Whether an attempt has been made on the current model (absorbed
    /// ones included): the next one is a retry.
    pub fn retrying(&self) -> bool {
        self.model_attempts > 0 || self.absorbing
    }

    pub fn tried(&self, backend: &Arc<Backend>) -> bool {
        holds(&self.tried, backend)
    }

    /// Moves the call to the next model of its fallback chain that exists;
    /// `false` at the chain's end.
    pub fn fall_back(&mut self, call: &mut Outbound) -> bool {
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

    pub fn failure(&self, error: FailureKind) -> Failure {
        Failure {
            error,
            attempts: self.attempts,
            maybe_produced: self.maybe_produced,
        }
    }

    /// The call ran out of attempts or time: its last failure, else a timeout.
    pub fn exhausted(mut self, call: &Outbound) -> Failure {
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

/// Whether `backend` is one of `list`.
pub(super) fn holds(list: &[Arc<Backend>], backend: &Arc<Backend>) -> bool {
    list.iter().any(|b| Arc::ptr_eq(b, backend))
}
