//! Retries and failover. Each request deposits into its model's retry
//! budget; a retry goes to another usable backend when there is one (at once),
//! else to the same one after its hint or a jittered backoff. Every outcome
//! updates the backend's health: 429s (and 503s with a hint) throttle it,
//! 5xx, timeouts and connection failures count against its breaker. On an
//! adaptive deployment, push-back also cuts its concurrency limit, which
//! absorbs short hints instead of the throttle (see `routing::adaptive`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::respond;
use crate::config::{Priority, RetryConfig};
use crate::error::GatewayError;
use crate::limits::{AttemptEnd, DeploymentQuotas, QuotaSkip};
use crate::metrics::Metrics;
use crate::queue::{held_while_streaming, take_slot};
use crate::routing::{
    AdaptiveLimit, Backend, Health, LimitSignal, ModelRoute, ModelRouter, Permit,
};
use crate::upstream::{UpstreamClient, UpstreamError, UpstreamRequest, UpstreamResponse};
use futures_util::StreamExt;

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

/// A 2xx answer.
pub struct Success {
    pub backend: Arc<Backend>,
    pub model: Arc<str>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Reply,
    pub attempts: u32,
    /// Time spent in upstream attempts, for the gateway-overhead metric.
    pub upstream_time: Duration,
}

pub enum Reply {
    Whole(Bytes),
    Stream(crate::upstream::BodyStream),
}

/// Why no 2xx answer came.
pub struct Failure {
    pub error: FailureKind,
    pub attempts: u32,
    /// Whether an upstream may have done work (timeouts, broken bodies).
    pub maybe_produced: bool,
}

pub enum FailureKind {
    /// The upstream's own error response, normalised, passed on as it is.
    Upstream {
        backend: Arc<Backend>,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Gateway(GatewayError),
}

/// For the log: the status, or the gateway's own message.
impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream { status, .. } => write!(f, "upstream answered {status}"),
            Self::Gateway(error) => error.fmt(f),
        }
    }
}

enum Outcome {
    Success(Success),
    /// Worth another attempt; `hint` is the upstream's own wait, if any.
    Retryable {
        failure: FailureKind,
        hint: Option<Duration>,
    },
    /// Not worth another attempt; `produced` when the upstream did the work
    /// (an answer too large, or in the wrong form), so usage is unknown.
    Final {
        failure: FailureKind,
        produced: bool,
    },
}

/// The longest a first try waits for a throttled model's deployments.
const FIRST_TRY_WAIT: Duration = Duration::from_secs(1);

pub async fn run(mut call: Call, first: Option<Arc<Backend>>) -> Result<Success, Failure> {
    call.route.budget.deposit();
    let mut next = first;
    let mut tried: Vec<Arc<Backend>> = Vec::with_capacity(call.retry.max_attempts as usize);
    // Deployments whose quota had no room for this call: not tried again.
    let mut skipped: Vec<Arc<Backend>> = Vec::new();
    let mut quota_free_at: Option<Instant> = None;
    let mut attempts = 0u32;
    // Attempts on the current model: each model down the fallback chain gets
    // its own `max_attempts`.
    let mut model_attempts = 0u32;
    let mut last: Option<(FailureKind, Option<Duration>)> = None;
    let mut maybe_produced = false;
    let mut upstream_time = Duration::ZERO;
    let mut fallbacks = call.route.fallbacks.clone().into_iter();
    let fail = |error, attempts, maybe_produced| Failure {
        error,
        attempts,
        maybe_produced,
    };
    // Bounded: each pass either makes an attempt or moves down the fallback chain.
    let models = 1 + call.route.fallbacks.len();
    for _ in 0..(call.retry.max_attempts as usize * models + models + 8) * 2 {
        let now = Instant::now();
        if now >= call.deadline {
            break;
        }
        let backend = match next.take() {
            Some(backend) => backend,
            None => {
                let candidates = call.route.candidates(call.affinity, now);
                let open: Vec<&Arc<Backend>> = candidates
                    .usable
                    .iter()
                    .filter(|b| !holds(&skipped, b))
                    .collect();
                let untried = open.iter().find(|b| !holds(&tried, b));
                match untried.or(open.first()) {
                    Some(backend) => Arc::clone(backend),
                    None => {
                        // A retry may wait for the only backends to come back
                        // (their hint), within bounds. So may a first try
                        // above the batch class when the wait is short: a
                        // deployment throttled for a moment (a 429 burst's
                        // hint) should not reach the caller as a refusal.
                        if let Some(earliest) = candidates.earliest {
                            let wait = earliest.saturating_duration_since(now);
                            let first_may_wait =
                                call.priority < Priority::Batch && wait <= FIRST_TRY_WAIT;
                            let may_wait = (model_attempts > 0 || first_may_wait)
                                && model_attempts < call.retry.max_attempts
                                && wait <= call.retry.max_retry_after
                                && earliest < call.deadline
                                && call.route.fallbacks.is_empty();
                            if may_wait {
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                        }
                        // Nothing of this model can serve: go down its fallback chain.
                        if fall_back(&mut call, &mut fallbacks) {
                            model_attempts = 0;
                            continue;
                        }
                        let earliest = match (candidates.earliest, quota_free_at) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        let error = match (last.take(), earliest) {
                            (Some((failure, _)), _) => failure,
                            (None, earliest) => FailureKind::Gateway(GatewayError::NoDeployment {
                                model: call.route.name.to_string(),
                                retry_after: earliest.map(|at| at.saturating_duration_since(now)),
                            }),
                        };
                        return Err(fail(error, attempts, maybe_produced));
                    }
                }
            }
        };
        if model_attempts > 0 {
            if model_attempts >= call.retry.max_attempts || !call.route.budget.withdraw(now) {
                // This model failed every attempt it may make: its fallbacks
                // serve the call rather than the client seeing the failure.
                if fall_back(&mut call, &mut fallbacks) {
                    model_attempts = 0;
                    continue;
                }
                break;
            }
            let same = tried.iter().any(|t| Arc::ptr_eq(t, &backend));
            if same {
                let hint = last.as_ref().and_then(|(_, hint)| *hint);
                if hint.is_some_and(|h| h > call.retry.max_retry_after) {
                    break;
                }
                let delay = hint
                    .unwrap_or_default()
                    .max(backoff(&call.retry, model_attempts));
                if now + delay >= call.deadline {
                    break;
                }
                tokio::time::sleep(delay).await;
            }
        }
        let charged = match call.quotas.charge(&backend.deployment.name).await {
            Ok(charged) => charged,
            Err(skip) => {
                skip_for_quota(&backend, &skip);
                if let Some(wait) = skip.wait() {
                    let at = now + wait;
                    quota_free_at = Some(quota_free_at.map_or(at, |t| t.min(at)));
                }
                skipped.push(backend);
                continue;
            }
        };
        // A deployment at its concurrency limit: wait for a slot in its queue.
        let slot = match &backend.slots {
            Some(slots) => {
                let what = || format!("deployment `{}`", backend.deployment.name);
                match take_slot(
                    slots,
                    call.priority,
                    call.caller.clone(),
                    &call.metrics,
                    what,
                )
                .await
                {
                    Ok(slot) => Some(slot),
                    Err(error) => {
                        call.quotas.end(charged, AttemptEnd::NotSent);
                        return Err(fail(FailureKind::Gateway(error), attempts, maybe_produced));
                    }
                }
            }
            None => None,
        };
        let Some(permit) = backend.health.start(Instant::now()) else {
            // The breaker closed the door between ordering and now.
            call.quotas.end(charged, AttemptEnd::NotSent);
            tried.push(backend);
            continue;
        };
        attempts += 1;
        model_attempts += 1;
        tried.push(backend.clone());
        let attempt_started = Instant::now();
        let outcome = attempt(&call, &backend, permit).await;
        let spent = attempt_started.elapsed();
        upstream_time += spent;
        call.metrics
            .upstream_duration
            .with_label_values(&[&*backend.deployment.name])
            .observe(spent.as_secs_f64());
        if let Some(limit) = &backend.adaptive {
            adapt(
                limit,
                &outcome,
                spent,
                attempt_started,
                &call.metrics,
                &backend,
            );
        }
        let end = attempt_end(&outcome);
        call.quotas.end(charged, end);
        maybe_produced |= end == AttemptEnd::MaybeProduced;
        match outcome {
            Outcome::Success(mut success) => {
                success.attempts = attempts;
                success.model = call.route.name.clone();
                success.upstream_time = upstream_time;
                if !Arc::ptr_eq(&tried[0], &backend) {
                    call.metrics
                        .failovers
                        .with_label_values(&[&*call.route.name])
                        .inc();
                }
                if let (Some(slot), Reply::Stream(body)) = (slot, &mut success.body) {
                    let inner = std::mem::replace(body, futures_util::stream::empty().boxed());
                    *body = held_while_streaming(inner, slot).boxed();
                }
                return Ok(success);
            }
            Outcome::Final { failure, .. } => {
                return Err(fail(failure, attempts, maybe_produced));
            }
            Outcome::Retryable { failure, hint } => {
                tracing::warn!(
                    deployment = %backend.deployment.name,
                    model = %call.route.name,
                    attempt = attempts,
                    error = %failure,
                    "upstream attempt failed; retrying if the retry policy allows"
                );
                last = Some((failure, hint));
            }
        }
    }
    let error = last.map_or_else(
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
    Err(fail(error, attempts, maybe_produced))
}

/// Feeds an attempt's outcome to its deployment's adaptive limit: a 2xx's
/// latency, or push-back (a 429, a 503 with a hint, a timeout). Other
/// failures say nothing about capacity; the breaker judges them.
fn adapt(
    limit: &AdaptiveLimit,
    outcome: &Outcome,
    spent: Duration,
    started: Instant,
    metrics: &Metrics,
    backend: &Backend,
) {
    let signal = match outcome {
        Outcome::Success(_) => LimitSignal::Success(spent),
        Outcome::Retryable {
            failure: FailureKind::Upstream { status, .. },
            hint,
        } if status.as_u16() == 429 || (status.as_u16() == 503 && hint.is_some()) => {
            LimitSignal::Overload(*hint)
        }
        Outcome::Retryable {
            failure: FailureKind::Gateway(GatewayError::UpstreamTimeout { .. }),
            ..
        } => LimitSignal::Overload(None),
        _ => return,
    };
    if let Some(change) = limit.record(signal, started, Instant::now()) {
        let name = &*backend.deployment.name;
        metrics
            .concurrency_changes
            .with_label_values(&[name, change.as_str()])
            .inc();
        metrics
            .concurrency_limit
            .with_label_values(&[name])
            .set(limit.limit() as i64);
        tracing::debug!(deployment = %name, limit = limit.limit(), "adaptive concurrency limit changed");
    }
}

/// Whether `backend` is one of `list`.
fn holds(list: &[Arc<Backend>], backend: &Arc<Backend>) -> bool {
    list.iter().any(|b| Arc::ptr_eq(b, backend))
}

/// A deployment whose quota has no room is passed over like an unusable
/// one; the limiter counts it in `sluice_quota_skips_total`.
fn skip_for_quota(backend: &Backend, skip: &QuotaSkip) {
    tracing::info!(
        deployment = %backend.deployment.name,
        reason = %skip,
        "deployment skipped: no quota room for this attempt"
    );
}

/// What an attempt did, for its deployment's token charge and for whether
/// the call may have produced output.
fn attempt_end(outcome: &Outcome) -> AttemptEnd {
    match outcome {
        Outcome::Success(_) => AttemptEnd::Served,
        Outcome::Final { produced: true, .. }
        | Outcome::Retryable {
            failure: FailureKind::Gateway(GatewayError::UpstreamTimeout { .. }),
            ..
        } => AttemptEnd::MaybeProduced,
        Outcome::Final { .. } | Outcome::Retryable { .. } => AttemptEnd::NothingProduced,
    }
}

/// Moves the call to the next model of its fallback chain that exists;
/// `false` at the chain's end.
fn fall_back(call: &mut Call, fallbacks: &mut impl Iterator<Item = Arc<str>>) -> bool {
    let Some(route) = fallbacks.find_map(|name| call.router.route(&name).cloned()) else {
        return false;
    };
    tracing::info!(from = %call.route.name, to = %route.name, "falling back to another model");
    call.request.client_model = route.name.clone();
    // A request to this model, as far as its retry budget goes.
    route.budget.deposit();
    call.route = route;
    true
}

/// Full jitter: uniform in `[0, min(max_delay, base_delay * 2^(n-1))]`.
fn backoff(retry: &RetryConfig, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    let ceiling = retry
        .base_delay
        .saturating_mul(1 << exponent)
        .min(retry.max_delay);
    ceiling.mul_f64(fastrand::f64())
}

async fn attempt(call: &Call, backend: &Arc<Backend>, permit: Permit) -> Outcome {
    let deployment = &backend.deployment;
    let started = Instant::now();
    let budget = call.deadline.saturating_duration_since(started);
    let timeout = deployment.timeout.min(budget);
    let health = &backend.health;
    let timed_out = |timeout: Duration| {
        FailureKind::Gateway(GatewayError::UpstreamTimeout {
            deployment: deployment.name.to_string(),
            timeout_ms: timeout.as_millis(),
        })
    };
    let sent =
        tokio::time::timeout(timeout, call.client.send(deployment, call.request.clone())).await;
    let response: UpstreamResponse = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            health.finish(permit, Some(true), started.elapsed(), Instant::now());
            let failure = FailureKind::Gateway(respond::upstream_failure(&deployment.name, &error));
            return match error {
                // A body that is not JSON cannot get better on another try.
                UpstreamError::Rewrite(_) => Outcome::Final {
                    failure,
                    produced: false,
                },
                _ => Outcome::Retryable {
                    failure,
                    hint: None,
                },
            };
        }
        Err(_) => {
            health.finish(permit, Some(true), started.elapsed(), Instant::now());
            return Outcome::Retryable {
                failure: timed_out(timeout),
                hint: None,
            };
        }
    };
    let now = Instant::now();
    health.observe(&response.headers, now);
    let reading = respond::Reading {
        idle: deployment.timeout,
        deadline: call.deadline,
        started,
        max_bytes: call.max_response_bytes,
    };
    let status = response.status;
    if let Some(wrong) = respond::misdirected(&response, call.expect_sse) {
        // A misconfigured or broken upstream: count it against its breaker.
        health.finish(permit, Some(true), started.elapsed(), now);
        return refused(wrong, &deployment.name);
    }
    if status.is_success() {
        let body = if call.read_body {
            let declared = respond::declared_length(&response.headers);
            let read = respond::collect_body(response.body, declared, &deployment.name, &reading);
            match read.await {
                Ok(bytes) => Reply::Whole(bytes),
                Err(error) => return unread(error, health, permit, started),
            }
        } else {
            Reply::Stream(response.body)
        };
        health.finish(permit, Some(false), started.elapsed(), Instant::now());
        return Outcome::Success(Success {
            backend: backend.clone(),
            model: call.route.name.clone(),
            status,
            headers: response.headers,
            body,
            attempts: 0,
            upstream_time: Duration::ZERO,
        });
    }
    let hint = crate::routing::retry_after(&response.headers);
    let code = status.as_u16();
    let throttling = code == 429 || (code == 503 && hint.is_some());
    let absorbed = backend.adaptive.is_some() && AdaptiveLimit::absorbs(hint);
    if throttling && !absorbed {
        health.throttle(now + hint.unwrap_or(call.retry.default_throttle));
    }
    let server_failure = !throttling && (code >= 500 || code == 408);
    let health_verdict = server_failure.then_some(true);
    health.finish(permit, health_verdict, started.elapsed(), now);
    let headers = response.headers.clone();
    let body = respond::collect_error_body(response, deployment.name.clone(), &reading).await;
    let failure = FailureKind::Upstream {
        backend: backend.clone(),
        status,
        headers,
        body,
    };
    if throttling || server_failure || code == 409 {
        Outcome::Retryable { failure, hint }
    } else {
        Outcome::Final {
            failure,
            produced: false,
        }
    }
}

/// A 2xx whose body could not be read whole. One too large is final (the
/// same question gets the same answer) and says nothing about the
/// deployment's health; a stalled or broken one may go better on a retry.
fn unread(error: GatewayError, health: &Health, permit: Permit, started: Instant) -> Outcome {
    let too_large = matches!(error, GatewayError::UpstreamResponseTooLarge { .. });
    let verdict = (!too_large).then_some(true);
    health.finish(permit, verdict, started.elapsed(), Instant::now());
    let failure = FailureKind::Gateway(error);
    if too_large {
        Outcome::Final {
            failure,
            produced: true,
        }
    } else {
        Outcome::Retryable {
            failure,
            hint: None,
        }
    }
}

/// An answer that is not relayed. A redirect may be one deployment's
/// misconfiguration, so another may serve; a whole answer to a streamed
/// request was produced (and billed upstream), so it is not asked for again.
fn refused(wrong: respond::Misdirected, deployment: &str) -> Outcome {
    let produced = matches!(wrong, respond::Misdirected::NotSse(_));
    let failure = FailureKind::Gateway(GatewayError::Upstream {
        deployment: deployment.to_owned(),
        reason: wrong.to_string(),
    });
    if produced {
        Outcome::Final { failure, produced }
    } else {
        Outcome::Retryable {
            failure,
            hint: None,
        }
    }
}
