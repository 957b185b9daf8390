//! The gate every attempt passes, in one place: its deployment's quota
//! charged (or the charge the rate-limit stage prepaid for it used), a slot
//! in the deployment's concurrency queue taken, and a permit from its
//! circuit breaker. What one step took is given back if a later one fails.

use std::sync::Arc;

use tokio::time::Instant;

use super::outcome::FailureKind;
use super::progress::{Outbound, Progress};
use crate::engines::limits::{AttemptEnd, Charged, DeploymentQuotas, QuotaSkip};
use crate::engines::queue::{Permit as Slot, take_slot};
use crate::engines::routing::{Backend, Permit};

/// What an attempt holds while it runs.
pub(super) struct Pass {
    pub charged: Charged,
    pub slot: Option<Slot>,
    pub permit: Permit,
}

pub(super) enum Gated {
    Passed(Pass),
    /// Not this deployment for this attempt (no quota room, or its breaker
    /// closed in between); choose again.
    Skipped,
    /// The call cannot go on (its place in the deployment's queue ran out).
    Failed(FailureKind),
}

pub(super) async fn pass(
    call: &Outbound,
    progress: &mut Progress,
    backend: &Arc<Backend>,
    now: Instant,
) -> Gated {
    let charged = match call.quotas.charge(&backend.deployment.name).await {
        Ok(charged) => charged,
        Err(skip) => {
            skip_for_quota(backend, &skip);
            if let Some(wait) = skip.wait() {
                let at = now + wait;
                progress.quota_free_at = Some(progress.quota_free_at.map_or(at, |t| t.min(at)));
            }
            progress.skipped.push(backend.clone());
            return Gated::Skipped;
        }
    };
    // Refunded whole if the attempt is not sent: no slot, the breaker
    // closed, or the call dropped while it waits (its client left, or a
    // hedge's other leg won).
    let mut unsent = Unsent {
        quotas: &call.quotas,
        charged: Some(charged),
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
                Err(error) => return Gated::Failed(FailureKind::Gateway(error)),
            }
        }
        None => None,
    };
    let Some(permit) = backend.health.start(Instant::now()) else {
        // The breaker closed the door between ordering and now.
        progress.tried.push(backend.clone());
        return Gated::Skipped;
    };
    Gated::Passed(Pass {
        charged: unsent.charged.take().unwrap_or_default(),
        slot,
        permit,
    })
}

/// A charge for an attempt not sent yet: refunded whole when dropped.
struct Unsent<'a> {
    quotas: &'a DeploymentQuotas,
    charged: Option<Charged>,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(charged) = self.charged.take() {
            self.quotas.end(charged, AttemptEnd::NotSent);
        }
    }
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
