//! One attempt: send the request to a deployment within its deadline, read
//! what it answers, and judge it: a success, worth retrying (with the
//! upstream's own wait, if it gave one), or final. Every outcome updates the
//! deployment's health; on an adaptive deployment it also feeds the learnt
//! concurrency limit (see `routing::adaptive`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::outcome::{FailureKind, Outcome, Reply, Success};
use super::progress::Outbound;
use super::respond;
use crate::engines::routing::{AdaptiveLimit, Backend, LimitSignal, Permit};
use crate::infra::metrics::Metrics;
use crate::upstream::{UpstreamError, UpstreamResponse};
use crate::vocab::error::GatewayError;

/// `traceparent` names the attempt's span upstream.
pub(super) async fn attempt(
    call: &Outbound,
    backend: &Arc<Backend>,
    permit: Permit,
    traceparent: Option<http::HeaderValue>,
) -> Outcome {
    let claim = Claim {
        backend: backend.clone(),
        permit: Some(permit),
    };
    let deployment = &backend.deployment;
    let started = Instant::now();
    let budget = call.deadline.saturating_duration_since(started);
    let timeout = deployment.timeout.min(budget);
    let health = &backend.health;
    let mut request = call.request.clone();
    if traceparent.is_some() {
        request.traceparent = traceparent;
    }
    let sent = tokio::time::timeout(timeout, call.client.send(deployment, request)).await;
    let response: UpstreamResponse = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            claim.finish(Some(true), started.elapsed(), Instant::now());
            let failure = FailureKind::Gateway(respond::upstream_failure(&deployment.name, &error));
            return match error {
                // A body that is not JSON cannot get better on another try.
                UpstreamError::Rewrite(_) => Outcome::Final {
                    failure,
                    produced: false,
                },
                _ => Outcome::retry(failure),
            };
        }
        Err(_) => {
            claim.finish(Some(true), started.elapsed(), Instant::now());
            return Outcome::retry(FailureKind::Gateway(GatewayError::UpstreamTimeout {
                deployment: deployment.name.to_string(),
                timeout_ms: timeout.as_millis(),
            }));
        }
    };
    let now = Instant::now();
    health.observe(&response.headers, now);
    if let Some(wrong) = respond::misdirected(&response, call.expect_sse) {
        // A misconfigured or broken upstream: count it against its breaker.
        claim.finish(Some(true), started.elapsed(), now);
        return refused(wrong, &deployment.name);
    }
    let reading = respond::Reading {
        idle: deployment.timeout,
        deadline: call.deadline,
        started,
        max_bytes: call.max_response_bytes,
    };
    if response.status.is_success() {
        succeeded(call, backend, response, claim, &reading).await
    } else {
        answered_with_error(call, backend, response, claim, &reading).await
    }
}

/// A 2xx: its body read whole (a non-streamed call) or handed on.
async fn succeeded(
    call: &Outbound,
    backend: &Arc<Backend>,
    response: UpstreamResponse,
    claim: Claim,
    reading: &respond::Reading,
) -> Outcome {
    let started = reading.started;
    let body = if call.read_body {
        let declared = respond::declared_length(&response.headers);
        let name = &backend.deployment.name;
        match respond::collect_body(response.body, declared, name, reading).await {
            Ok(bytes) => Reply::Whole(bytes),
            Err(error) => return unread(error, claim, started),
        }
    } else {
        Reply::Stream(response.body)
    };
    claim.finish(Some(false), started.elapsed(), Instant::now());
    Outcome::Success(Success {
        backend: backend.clone(),
        model: call.route.name.clone(),
        status: response.status,
        headers: response.headers,
        body,
        attempts: 0,
        upstream_time: Duration::ZERO,
        span: None,
        hedge: None,
    })
}

/// An attempt's claim on its deployment's health record (the in-flight
/// count, a half-open breaker's trial): finished with the attempt's
/// verdict, or, when the attempt is dropped first (its client left, a
/// deadline), given back without one, so neither leaks.
struct Claim {
    backend: Arc<Backend>,
    permit: Option<Permit>,
}

impl Claim {
    fn finish(mut self, failure: Option<bool>, latency: Duration, now: Instant) {
        if let Some(permit) = self.permit.take() {
            self.backend.health.finish(permit, failure, latency, now);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.backend.health.abandon(permit);
        }
    }
}

/// An error status: push-back (429, or 503 with a hint) throttles the
/// deployment unless its adaptive limit absorbs it; 5xx and 408 count
/// against its breaker; both are worth a retry, as is a 409.
async fn answered_with_error(
    call: &Outbound,
    backend: &Arc<Backend>,
    response: UpstreamResponse,
    claim: Claim,
    reading: &respond::Reading,
) -> Outcome {
    let health = &backend.health;
    let now = Instant::now();
    let status = response.status;
    let hint = crate::engines::routing::retry_after(&response.headers);
    let code = status.as_u16();
    let throttling = code == 429 || (code == 503 && hint.is_some());
    let absorbed = throttling
        && backend
            .adaptive
            .as_ref()
            .is_some_and(|limit| limit.absorbs(hint));
    if throttling && !absorbed {
        health.throttle(now + hint.unwrap_or(call.retry.default_throttle));
    }
    let absorbed = absorbed || patient(call, backend, throttling, hint);
    let server_failure = !throttling && (code >= 500 || code == 408);
    claim.finish(
        server_failure.then_some(true),
        reading.started.elapsed(),
        now,
    );
    let headers = response.headers.clone();
    let body =
        respond::collect_error_body(response, backend.deployment.name.clone(), reading).await;
    let failure = FailureKind::Upstream {
        backend: backend.clone(),
        status,
        headers,
        body,
    };
    if throttling || server_failure || code == 409 {
        Outcome::Retryable {
            failure,
            hint,
            absorbed,
        }
    } else {
        Outcome::Final {
            failure,
            produced: false,
        }
    }
}

/// Whether a realtime or critical call's push-back spends no attempt: a
/// short hint (or none) from a deployment busy with other calls means it
/// is full for a moment (a flood of another class keeps it so), not out
/// of quota. The call waits the hint out and tries again, as an adaptive
/// limit's absorbed push-back does; these classes are few enough that
/// their patience cannot multiply the load. `throttling` push-back only.
fn patient(call: &Outbound, backend: &Backend, throttling: bool, hint: Option<Duration>) -> bool {
    throttling
        && call.priority < crate::config::Priority::Standard
        && AdaptiveLimit::is_short(hint)
        // The caller's own attempt is still counted in flight.
        && backend.health.in_flight() > 1
}

/// A 2xx whose body could not be read whole. One too large is final (the
/// same question gets the same answer) and says nothing about the
/// deployment's health; a stalled or broken one may go better on a retry.
fn unread(error: GatewayError, claim: Claim, started: Instant) -> Outcome {
    let too_large = matches!(error, GatewayError::UpstreamResponseTooLarge { .. });
    let verdict = (!too_large).then_some(true);
    claim.finish(verdict, started.elapsed(), Instant::now());
    let failure = FailureKind::Gateway(error);
    if too_large {
        Outcome::Final {
            failure,
            produced: true,
        }
    } else {
        Outcome::retry(failure)
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
        Outcome::retry(failure)
    }
}

/// Feeds an attempt's outcome to its deployment's adaptive limit: a 2xx's
/// latency, or push-back (a 429, a 503 with a hint, a timeout). Other
/// failures say nothing about capacity; the breaker judges them.
pub(super) fn adapt(
    limit: &AdaptiveLimit,
    outcome: &Outcome,
    spent: Duration,
    started: Instant,
    metrics: &Metrics,
    backend: &Backend,
) {
    let signal = match outcome {
        Outcome::Success(_) => LimitSignal::Success(spent),
        // An absorbed hint holds nothing: the deployment stays in rotation.
        Outcome::Retryable {
            failure: FailureKind::Upstream { status, .. },
            hint,
            absorbed,
        } if status.as_u16() == 429 || (status.as_u16() == 503 && hint.is_some()) => {
            LimitSignal::Overload(hint.filter(|_| !absorbed))
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
