//! Deployment quotas across a call's attempts: retries, failovers and
//! fallbacks charge the deployment they are sent to, like the first attempt.
//!
//! The accounting rule, with `E` the call's token estimate:
//!
//! 1. Admission charges the key, org and model buckets once for the call
//!    (1 request, `E` tokens), and the deployment it chose for the first
//!    attempt (1 request, `E` tokens): that charge is prepaid for the first
//!    attempt sent to that deployment.
//! 2. Every other attempt charges its deployment 1 request and `E` tokens
//!    before it is sent, all or nothing. A deployment without room is not
//!    sent to: the dispatcher skips it like an unusable one.
//! 3. An attempt's request is never refunded once sent (providers count
//!    failed requests too). Its tokens are:
//!    - refunded (`-E`) when it produced nothing (an error status, a refused
//!      connection);
//!    - kept (`E`) when it may have produced (a timeout, a broken body);
//!    - for the attempt that served the call, corrected when the call ends
//!      like the key's: to the reported usage, or refunded when the call
//!      produced nothing, or kept when unknown.
//! 4. A charge whose attempt was never sent (the breaker closed in between,
//!    no queue slot), including an unused prepaid one, is refunded whole.
//!
//! Refunds and corrections are applied together when the call ends (one
//! store round trip); until then the charges hold.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bucket::{Bucket, Kind, Pair};
use super::engine::{Charge, Refused};
use super::{Engine, Limiter};
use crate::config::OnRedisError;
use crate::vocab::{Finished, Outcome, UsageObserver};

/// What the dispatcher may ask of the limiter: charge a deployment for one
/// attempt and say how that attempt ended. Carried in the request extensions
/// by the rate-limit layer; the default charges nothing (no limiter, or no
/// deployment quotas).
#[derive(Clone, Default)]
pub struct DeploymentQuotas(Option<Arc<CallState>>);

/// A call's estimate and the charges its attempts hold.
pub(super) struct CallState {
    limiter: Arc<Limiter>,
    tokens: u64,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    /// The admission's charge on the chosen deployment, until an attempt uses it.
    prepaid: Option<Pair>,
    /// Token (and request) changes to apply when the call ends.
    changes: Vec<(Arc<Bucket>, i64)>,
    /// The TPM buckets of the attempts that got an answer: the one of the
    /// deployment that served is corrected at the end. Two only for a
    /// hedged stream whose legs both answered before one started first.
    served: Vec<Arc<Bucket>>,
}

/// One attempt's charge; hand it back to `DeploymentQuotas::end`.
#[must_use]
#[derive(Default)]
pub struct Charged(Option<Pair>);

/// How an attempt ended, for its tokens (see the accounting rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Not sent after all: the whole charge is refunded.
    NotSent,
    /// The upstream refused or failed before producing: tokens refunded.
    NothingProduced,
    /// Output may have been produced: the estimate is kept.
    MaybeProduced,
    /// This attempt serves the call: settled with the call's usage.
    Served,
}

/// Why a deployment was not charged, so not sent to.
#[derive(Debug, Clone)]
pub enum QuotaSkip {
    /// Its quota has no room until `wait` (`None`: the call never fits).
    NoRoom {
        kind: Kind,
        limit: u64,
        wait: Option<Duration>,
    },
    /// The shared store is unreachable and set to fail closed.
    StoreDown,
}

impl QuotaSkip {
    /// When the deployment could take the attempt, if ever.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Self::NoRoom { wait, .. } => *wait,
            Self::StoreDown => None,
        }
    }
}

impl fmt::Display for QuotaSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRoom {
                kind,
                limit,
                wait: Some(wait),
            } => write!(
                f,
                "its {} quota ({limit}) has no room for {} ms",
                kind.per_minute(),
                wait.as_millis()
            ),
            Self::NoRoom {
                kind,
                limit,
                wait: None,
            } => write!(
                f,
                "the call is larger than its {} quota ({limit})",
                kind.per_minute()
            ),
            Self::StoreDown => f.write_str("the rate-limit store is unreachable (fail closed)"),
        }
    }
}

impl DeploymentQuotas {
    pub(super) fn of(state: Arc<CallState>) -> Self {
        Self(Some(state))
    }

    /// Charges `deployment` for one attempt (or uses the admission's charge).
    pub async fn charge(&self, deployment: &str) -> Result<Charged, QuotaSkip> {
        let Some(state) = &self.0 else {
            return Ok(Charged(None));
        };
        let Some(pair) = state.limiter.table.deployments.get(deployment) else {
            return Ok(Charged(None));
        };
        if state.take_prepaid(pair) {
            return Ok(Charged(Some(pair.clone())));
        }
        let charges: Vec<Charge<'_>> = pair
            .iter()
            .map(|bucket| Charge {
                bucket,
                units: match bucket.kind {
                    Kind::Requests => 1,
                    Kind::Tokens => state.tokens,
                },
            })
            .collect();
        let decision = match &state.limiter.engine {
            Engine::Memory(engine) => engine.admit(&charges, &[]),
            Engine::Redis(engine) => match engine.admit(&charges, &[]).await {
                Ok(decision) => decision,
                Err(error) => {
                    return match state.limiter.store_policy(&error) {
                        OnRedisError::FailOpen => Ok(Charged(None)),
                        OnRedisError::FailClosed => Err(QuotaSkip::StoreDown),
                    };
                }
            },
        };
        match decision.result {
            Ok(_) => Ok(Charged(Some(pair.clone()))),
            Err(refused) => {
                let Some(bucket) = charges
                    .get(refused.position())
                    .or(charges.first())
                    .map(|charge| charge.bucket)
                else {
                    return Ok(Charged(None));
                };
                state
                    .limiter
                    .metrics
                    .quota_skips
                    .with_label_values(&[&*bucket.name])
                    .inc();
                Err(QuotaSkip::NoRoom {
                    kind: bucket.kind,
                    limit: bucket.shape.limit(),
                    wait: match refused {
                        Refused::Wait { wait_secs, .. } => {
                            Some(Duration::from_secs_f64(wait_secs.max(0.0)))
                        }
                        Refused::Never { .. } => None,
                    },
                })
            }
        }
    }

    /// Records how the attempt that took `charged` ended.
    pub fn end(&self, charged: Charged, end: AttemptEnd) {
        let (Some(state), Some(pair)) = (&self.0, charged.0) else {
            return;
        };
        let Ok(mut ledger) = state.ledger.lock() else {
            return;
        };
        let tokens = state.tokens as i64;
        match end {
            AttemptEnd::NotSent => ledger.changes.extend(refund(&pair, tokens)),
            AttemptEnd::NothingProduced => ledger
                .changes
                .extend(pair.tokens.map(|bucket| (bucket, -tokens))),
            AttemptEnd::MaybeProduced => {}
            AttemptEnd::Served => ledger.served.extend(pair.tokens),
        }
    }
}

impl CallState {
    /// `prepaid`: the deployment buckets the admission charged, if any.
    pub(super) fn new(limiter: Arc<Limiter>, tokens: u64, prepaid: Option<Pair>) -> Arc<Self> {
        Arc::new(Self {
            limiter,
            tokens,
            ledger: Mutex::new(Ledger {
                prepaid,
                ..Ledger::default()
            }),
        })
    }

    /// Whether `pair` is the admission's unused charge, using it if so.
    fn take_prepaid(&self, pair: &Pair) -> bool {
        let Ok(mut ledger) = self.ledger.lock() else {
            return false;
        };
        let matches = ledger
            .prepaid
            .as_ref()
            .is_some_and(|prepaid| same_subject(prepaid, pair));
        if matches {
            ledger.prepaid = None;
        }
        matches
    }

    /// Every change the call's end makes to the deployment buckets, given
    /// the correction `delta` of the tokens that served and the deployment
    /// that served (a cancelled hedge's leg keeps its estimate).
    fn deployment_changes(&self, delta: i64, served_by: Option<&str>) -> Vec<(Arc<Bucket>, i64)> {
        let Ok(mut ledger) = self.ledger.lock() else {
            return Vec::new();
        };
        let ledger = std::mem::take(&mut *ledger);
        let mut changes = ledger.changes;
        if let Some(prepaid) = &ledger.prepaid {
            changes.extend(refund(prepaid, self.tokens as i64));
        }
        let served = match served_by {
            Some(name) if ledger.served.len() > 1 => ledger
                .served
                .into_iter()
                .find(|bucket| *bucket.name == *name),
            _ => ledger.served.into_iter().next(),
        };
        changes.extend(served.map(|bucket| (bucket, delta)));
        changes
    }
}

/// A whole charge given back: its request and its tokens.
fn refund(pair: &Pair, tokens: i64) -> impl Iterator<Item = (Arc<Bucket>, i64)> + '_ {
    pair.iter().map(move |bucket| {
        let units = match bucket.kind {
            Kind::Requests => 1,
            Kind::Tokens => tokens,
        };
        (bucket.clone(), -units)
    })
}

fn same_subject(a: &Pair, b: &Pair) -> bool {
    match (a.iter().next(), b.iter().next()) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Settles a call when it ends: the key, org and model TPM buckets to the
/// reported usage, and the deployment buckets by the accounting rule above.
pub struct Settlement {
    pub(super) state: Arc<CallState>,
    /// The call-wide TPM buckets charged at admission.
    pub(super) tokens: Vec<Arc<Bucket>>,
}

impl Settlement {
    /// Each bucket once, with the sum of its changes; no zero changes.
    fn changes(&self, delta: i64, served_by: Option<&str>) -> Vec<(Arc<Bucket>, i64)> {
        let mut merged: Vec<(Arc<Bucket>, i64)> = Vec::new();
        let call_wide = self.tokens.iter().map(|bucket| (bucket.clone(), delta));
        let deployments = self.state.deployment_changes(delta, served_by);
        for (bucket, change) in call_wide.chain(deployments) {
            match merged.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &bucket)) {
                Some((_, sum)) => *sum += change,
                None => merged.push((bucket, change)),
            }
        }
        merged.retain(|(_, change)| *change != 0);
        merged
    }
}

impl UsageObserver for Settlement {
    fn finish(self: Box<Self>, finished: &Finished<'_>) {
        let estimate = self.state.tokens as i64;
        let delta = match finished.outcome {
            Outcome::Reported(usage) => usage.total() as i64 - estimate,
            Outcome::NoOutput => -estimate,
            // Output may have been produced: keep the estimate.
            Outcome::Unknown => 0,
        };
        let served_by = finished.served.map(|served| &*served.deployment);
        let changes = self.changes(delta, served_by);
        if changes.is_empty() {
            return;
        }
        let limiter = self.state.limiter.clone();
        match &limiter.engine {
            // A few atomics: done in place.
            Engine::Memory(engine) => engine.adjust(&borrowed(&changes)),
            // A round trip: never on the request path. Instrumented so a
            // failure's warning is logged within the call's span.
            Engine::Redis(_) => {
                let span = tracing::Span::current();
                limiter.tasks.clone().spawn(tracing::Instrument::instrument(
                    async move { limiter.adjust_shared(&borrowed(&changes)).await },
                    span,
                ));
            }
        }
    }
}

fn borrowed(changes: &[(Arc<Bucket>, i64)]) -> Vec<(&Bucket, i64)> {
    changes
        .iter()
        .map(|(bucket, change)| (bucket.as_ref(), *change))
        .collect()
}
