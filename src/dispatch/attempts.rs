//! Retries and failover: a call's attempts, one after another. Each request
//! deposits into its model's retry budget; each attempt is chosen
//! (`choose`), passes the gate (`gate`: quota, slot, breaker), is sent and
//! judged (`attempt`), and its outcome recorded here. A retry goes to
//! another usable deployment when there is one (at once), else to the same
//! one after its hint or a jittered backoff; a model that cannot serve
//! hands the call down its fallback chain.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::attempt::{adapt, attempt};
use super::choose::{self, Choice};
use super::gate::{self, Gated, Pass};
pub use super::outcome::{Failure, FailureKind, Reply, Success};
use super::outcome::{Outcome, attempt_end};
pub use super::progress::Outbound;
use super::progress::{MAX_ABSORBED, Progress};
use super::trace;
use crate::engines::limits::AttemptEnd;
use crate::engines::queue::held_while_streaming;
use crate::engines::routing::Backend;
use crate::infra::otel::LiveSpan;

pub async fn run(mut call: Outbound, first: Option<Arc<Backend>>) -> Result<Success, Failure> {
    call.route.budget.deposit();
    let mut progress = Progress::new(&call, first);
    // Bounded: each pass either makes an attempt or moves down the fallback chain.
    let models = 1 + call.route.fallbacks.len();
    let absorbed = MAX_ABSORBED as usize;
    for _ in 0..(call.retry.max_attempts as usize * models + models + absorbed + 8) * 2 {
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
        if let Some(legs) = &call.legs {
            // Before its queue wait: a hedge must not join the same queue.
            legs.set_sending(&backend);
        }
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

/// One attempt on `backend` and no retry: a hedge, backed up by the call's
/// first leg, which keeps its own retries and fallbacks.
pub(super) async fn one(call: Outbound, backend: Arc<Backend>) -> Result<Success, Failure> {
    let mut progress = Progress::new(&call, None);
    let pass = match gate::pass(&call, &mut progress, &backend, Instant::now()).await {
        Gated::Passed(pass) => pass,
        Gated::Skipped => return Err(progress.exhausted(&call)),
        Gated::Failed(failure) => return Err(progress.failure(failure)),
    };
    match run_attempt(&call, &mut progress, backend, pass).await {
        Some(result) => result,
        None => Err(progress.exhausted(&call)),
    }
}

/// Records an attempt's outcome on its span and ends it, unless it is a
/// stream that has yet to be relayed: that span is returned, still open.
fn traced(span: LiveSpan, outcome: &Outcome) -> Option<LiveSpan> {
    if !span.is_recording() {
        return None;
    }
    let failure = match outcome {
        Outcome::Success(success) => {
            span.set(
                "http.response.status_code",
                i64::from(success.status.as_u16()),
            );
            if let Reply::Whole(body) = &success.body {
                let cap = span.tracer().content_cap();
                trace::AnswerFacts::of_body(body, cap).record_on(&span);
                span.end();
                return None;
            }
            return Some(span);
        }
        Outcome::Final { failure, .. } | Outcome::Retryable { failure, .. } => failure,
    };
    trace::failed(&span, failure);
    None
}

/// Sends one attempt and records its outcome; `Some` when the call ends.
async fn run_attempt(
    call: &Outbound,
    progress: &mut Progress,
    backend: Arc<Backend>,
    pass: Pass,
) -> Option<Result<Success, Failure>> {
    progress.attempts += 1;
    progress.model_attempts += 1;
    progress.tried.push(backend.clone());
    // A hedged call numbers the attempts of both its legs.
    let number = call
        .legs
        .as_ref()
        .map_or(progress.attempts, |legs| legs.attempt());
    let span = call.trace.as_ref().map(|trace| {
        let deployment = &backend.deployment;
        let upstream_model = deployment.upstream_model(&call.request.client_model);
        trace.attempt(call.request.endpoint, deployment, upstream_model, number)
    });
    let traceparent = span.as_ref().map(|span| span.context().traceparent());
    let started = Instant::now();
    let outcome = attempt(call, &backend, pass.permit, traceparent).await;
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
    let span = span.and_then(|span| traced(span, &outcome));
    match outcome {
        Outcome::Success(mut success) => {
            success.span = span;
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
        Outcome::Retryable {
            failure,
            hint,
            absorbed,
        } => {
            tracing::warn!(
                deployment = %backend.deployment.name,
                model = %call.route.name,
                attempt = progress.attempts,
                error = %failure,
                absorbed,
                "upstream attempt failed; retrying if the retry policy allows"
            );
            progress.last = Some((failure, hint));
            progress.absorbing = absorbed && progress.absorbed < MAX_ABSORBED;
            if progress.absorbing {
                // The limit took the push-back: the call queues for a slot
                // under the smaller limit after a short backoff, spending
                // no attempt and no retry budget.
                progress.absorbed += 1;
                progress.model_attempts -= 1;
                call.metrics
                    .absorbed_pushback
                    .with_label_values(&[&*backend.deployment.name])
                    .inc();
            }
            None
        }
    }
}
