//! Choosing each attempt's deployment: the next usable one not tried yet
//! (else one tried, after its hint or a jittered backoff), waiting out a
//! short throttle, or moving down the model's fallback chain; and when the
//! call must stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::outcome::FailureKind;
use super::progress::{Outbound, Progress, holds};
use crate::config::{Priority, RetryConfig};
use crate::engines::routing::{AdaptiveLimit, Backend};
use crate::vocab::error::GatewayError;

/// The longest a first try waits for a throttled model's deployments.
const FIRST_TRY_WAIT: Duration = Duration::from_secs(1);

/// What the call does next.
pub(super) enum Choice {
    Try(Arc<Backend>),
    /// Look again (after a wait, or on the next model of the chain).
    Again,
    /// Stop with this failure.
    Fail(FailureKind),
    /// Stop with the last failure (or a timeout).
    GiveUp,
}

/// The deployment for the next attempt, paced: a retry on the same
/// deployment waits its hint or a backoff first.
pub(super) async fn next(call: &mut Outbound, progress: &mut Progress, now: Instant) -> Choice {
    let backend = match progress.next.take() {
        Some(backend) if can_take(call, &backend) => backend,
        _ => match pick(call, progress, now).await {
            Choice::Try(backend) => backend,
            other => return other,
        },
    };
    if !progress.retrying() {
        return Choice::Try(backend);
    }
    let absorbed = std::mem::take(&mut progress.absorbing);
    let spent = progress.model_attempts >= call.retry.max_attempts;
    if !absorbed && (spent || !call.route.budget.withdraw(now)) {
        // This model failed every attempt it may make: its fallbacks serve
        // the call rather than the client seeing the failure.
        return if progress.fall_back(call) {
            Choice::Again
        } else {
            Choice::GiveUp
        };
    }
    if progress.tried(&backend) {
        let hint = progress.last.as_ref().and_then(|(_, hint)| *hint);
        // An absorbed push-back's long hint was read as concurrency, not
        // a window to wait out; its backoff grows with each absorbed one.
        let (hint, tries) = match absorbed {
            true => (
                hint.filter(|h| AdaptiveLimit::is_short(Some(*h))),
                progress.absorbed,
            ),
            false => (hint, progress.model_attempts),
        };
        if hint.is_some_and(|h| h > call.retry.max_retry_after) {
            return Choice::GiveUp;
        }
        let delay = hint.unwrap_or_default().max(backoff(&call.retry, tries));
        if now + delay >= call.deadline {
            return Choice::GiveUp;
        }
        tokio::time::sleep(delay).await;
    }
    Choice::Try(backend)
}

/// A usable deployment of the model in force, untried ones first; else a
/// wait for one to come back, the fallback chain, or the failure.
async fn pick(call: &mut Outbound, progress: &mut Progress, now: Instant) -> Choice {
    let candidates = call.route.candidates(call.affinity, now);
    let open: Vec<&Arc<Backend>> = candidates
        .usable
        .iter()
        .filter(|b| !holds(&progress.skipped, b) && can_take(call, b))
        .collect();
    let untried = open.iter().find(|b| !progress.tried(b));
    if let Some(backend) = untried.or(open.first()) {
        return Choice::Try(Arc::clone(backend));
    }
    // A retry may wait for the only backends to come back (their hint),
    // within bounds. So may a first try above the batch class when the wait
    // is short: a deployment throttled for a moment (a 429 burst's hint)
    // should not reach the caller as a refusal.
    if let Some(earliest) = candidates.earliest {
        let wait = earliest.saturating_duration_since(now);
        let first_may_wait = call.priority < Priority::Batch && wait <= FIRST_TRY_WAIT;
        let may_wait = (progress.retrying() || first_may_wait)
            && progress.model_attempts < call.retry.max_attempts
            && wait <= call.retry.max_retry_after
            && earliest < call.deadline
            && call.route.fallbacks.is_empty();
        if may_wait {
            tokio::time::sleep(wait).await;
            return Choice::Again;
        }
    }
    // Nothing of this model can serve: go down its fallback chain.
    if progress.fall_back(call) {
        return Choice::Again;
    }
    let earliest = match (candidates.earliest, progress.quota_free_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Choice::Fail(match (progress.last.take(), earliest) {
        (Some((failure, _)), _) => failure,
        (None, earliest) => FailureKind::Gateway(GatewayError::NoDeployment {
            model: call.route.name.to_string(),
            retry_after: earliest.map(|at| at.saturating_duration_since(now)),
        }),
    })
}

/// Whether `backend` can take the call: a Messages call with no chat
/// translation only an Anthropic deployment can (any other would refuse
/// it), so routing passes the others over.
pub(super) fn can_take(call: &Outbound, backend: &Backend) -> bool {
    let untranslatable = call
        .request
        .messages
        .as_ref()
        .is_some_and(|messages| messages.untranslatable.is_some());
    !untranslatable || backend.deployment.provider == crate::config::Provider::Anthropic
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
