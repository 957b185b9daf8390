//! Hedged requests (`[models.NAME.hedge]`). When a call's first token is
//! later than the model's recent percentile of times to first token, the
//! same call goes to a second deployment, and the first leg to start
//! answering serves it. The other leg is dropped: that cancels its upstream
//! call and gives back its claim on the deployment (see `attempt::Claim`),
//! while its quota charge is kept, since the upstream may bill a call it
//! began. The model's hedge budget caps the extra calls.
//!
//! Only calls whose repeat changes nothing upstream are hedged: chat
//! completions (and Messages calls, which arrive as them), completions and
//! embeddings. A hedge is one attempt; the first leg keeps its retries and
//! fallbacks.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::Either;
use tokio::time::Instant;

use super::attempts::{self, Failure, Outbound, Reply, Success};
use super::choose;
use super::progress::Legs;
use crate::engines::routing::{Backend, Hedge};
use crate::infra::metrics::Metrics;
use crate::upstream::UpstreamError;
use crate::vocab::{Endpoint, Hedged};

pub const HEDGE_HEADER: &str = "x-sluice-hedge";

/// A call's attempts, hedged when its model asks for it. Not an `async fn`:
/// a call that is not hedged gets the attempts' own future, with nothing
/// of hedging's added to its size, and a hedged one a boxed future (two
/// legs' attempts are large).
pub(super) fn run(
    call: Outbound,
    first: Option<Arc<Backend>>,
) -> impl Future<Output = Result<Success, Failure>> {
    match &call.route.hedge {
        Some(hedge) if hedgeable(&call) => {
            let hedge = hedge.clone();
            Either::Left(Box::pin(hedged(call, first, hedge)))
        }
        _ => Either::Right(attempts::run(call, first)),
    }
}

async fn hedged(
    mut call: Outbound,
    first: Option<Arc<Backend>>,
    hedge: Arc<Hedge>,
) -> Result<Success, Failure> {
    hedge.deposit();
    let streamed = call.expect_sse;
    let started = Instant::now();
    let legs = Arc::new(Legs::default());
    call.legs = Some(legs.clone());
    let primary = started_answer(attempts::run(call.clone(), first));
    tokio::pin!(primary);
    let late = async {
        match hedge.delay(streamed) {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = &mut primary => return unhedged(&hedge, streamed, started, result),
        () = late => {}
    }
    // What the counts need, kept after the hedge leg takes the call.
    let counted = (call.metrics.clone(), call.route.name.clone());
    let skipped = match second_deployment(&call, legs.sending()) {
        None => Err("no_deployment"),
        Some(_) if !hedge.withdraw() => Err("no_budget"),
        Some(second) => Ok(second),
    };
    let second = match skipped {
        Ok(second) => second,
        Err(reason) => {
            count(&counted, reason);
            return unhedged(&hedge, streamed, started, primary.await);
        }
    };
    let hedged_at = Instant::now();
    let hedged = started_answer(attempts::one(call, second));
    tokio::pin!(hedged);
    // `first`: the leg that finished first; a leg that answered without
    // starting (its stream broke or fell silent first) serves only when
    // the other does no better.
    let (outcome, since) = tokio::select! {
        biased;
        first = &mut primary => match first {
            Ok(leg) if leg.live => (Ok((Hedged::Lost, leg)), started),
            first => decide(first, hedged.await, started, hedged_at),
        },
        first = &mut hedged => match first {
            Ok(leg) if leg.live => {
                // The first leg's start is at least this late: kept, so
                // the tail it belongs to stays in view.
                hedge.record(streamed, started.elapsed());
                (Ok((Hedged::Won, leg)), hedged_at)
            }
            first => decide(primary.await, first, started, hedged_at),
        },
    };
    finish(&hedge, &counted, &legs, streamed, since, outcome)
}

/// Both legs' results, the first leg's first: which serves the call.
fn decide(
    primary: Result<Leg, Failure>,
    hedge: Result<Leg, Failure>,
    started: Instant,
    hedged_at: Instant,
) -> (Result<(Hedged, Leg), Failure>, Instant) {
    match (primary, hedge) {
        (Ok(leg), Ok(other)) if !leg.live && other.live => (Ok((Hedged::Won, other)), hedged_at),
        (Ok(leg), _) => (Ok((Hedged::Failed, leg)), started),
        (Err(_), Ok(leg)) => (Ok((Hedged::Won, leg)), hedged_at),
        (Err(mut failure), Err(other)) => {
            failure.maybe_produced |= other.maybe_produced;
            (Err(failure), started)
        }
    }
}

/// The call's answer, counted and recorded; its attempts are both legs'.
#[expect(
    clippy::result_large_err,
    reason = "the attempts' own result, moved once per call, as `attempts::run` returns it"
)]
fn finish(
    hedge: &Hedge,
    counted: &(Metrics, Arc<str>),
    legs: &Legs,
    streamed: bool,
    since: Instant,
    outcome: Result<(Hedged, Leg), Failure>,
) -> Result<Success, Failure> {
    match outcome {
        Ok((hedged, Leg { mut success, live })) => {
            if live {
                hedge.record(streamed, since.elapsed());
            }
            count(counted, result_name(hedged));
            success.hedge = Some(hedged);
            success.attempts = legs.attempts();
            Ok(success)
        }
        Err(mut failure) => {
            count(counted, "both_failed");
            failure.attempts = legs.attempts();
            Err(failure)
        }
    }
}

/// Calls whose repeat on another deployment changes nothing upstream.
fn hedgeable(call: &Outbound) -> bool {
    let endpoint = call.request.endpoint;
    call.repeatable
        && call.request.stored.is_none()
        && matches!(
            endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings
        )
}

/// The best usable deployment other than the one the first leg is on.
fn second_deployment(call: &Outbound, busy: Option<Arc<Backend>>) -> Option<Arc<Backend>> {
    let candidates = call.route.candidates(call.affinity, Instant::now());
    candidates.usable.into_iter().find(|backend| {
        busy.as_ref().is_none_or(|busy| !Arc::ptr_eq(busy, backend))
            && choose::can_take(call, backend)
    })
}

/// A leg's answer. `live` when it has started: a whole answer, or a
/// stream whose first chunk arrived (kept, and put back in front). A
/// stream that broke or fell silent before its first chunk is not live:
/// only its error goes on.
struct Leg {
    success: Success,
    live: bool,
}

async fn started_answer(
    attempts: impl Future<Output = Result<Success, Failure>>,
) -> Result<Leg, Failure> {
    let mut success = attempts.await?;
    let Reply::Stream(body) = &mut success.body else {
        return Ok(Leg {
            success,
            live: true,
        });
    };
    let mut stream = std::mem::replace(body, futures_util::stream::empty().boxed());
    let idle = success.backend.deployment.timeout;
    let (first, live) = match tokio::time::timeout(idle, stream.next()).await {
        Ok(Some(Ok(chunk))) => (Some(Ok(chunk)), true),
        Ok(Some(Err(error))) => (Some(Err(error)), false),
        // Ended: an empty stream, never polled past its end.
        Ok(None) => (None, true),
        Err(_) => {
            let silent = format!("no first chunk within {} ms", idle.as_millis());
            (Some(Err(UpstreamError::Body(silent))), false)
        }
    };
    *body = match first {
        Some(Ok(chunk)) => futures_util::stream::once(std::future::ready(Ok(chunk)))
            .chain(stream)
            .boxed(),
        Some(Err(error)) => futures_util::stream::once(std::future::ready(Err(error))).boxed(),
        None => futures_util::stream::empty().boxed(),
    };
    Ok(Leg { success, live })
}

/// A call that was not hedged: its start recorded when it had one.
#[expect(
    clippy::result_large_err,
    reason = "the attempts' own result, moved once per call, as `attempts::run` returns it"
)]
fn unhedged(
    hedge: &Hedge,
    streamed: bool,
    started: Instant,
    leg: Result<Leg, Failure>,
) -> Result<Success, Failure> {
    let leg = leg?;
    if leg.live {
        hedge.record(streamed, started.elapsed());
    }
    Ok(leg.success)
}

fn result_name(leg: Hedged) -> &'static str {
    match leg {
        Hedged::Lost => "primary_won",
        Hedged::Won => "hedge_won",
        Hedged::Failed => "hedge_failed",
    }
}

fn count((metrics, model): &(Metrics, Arc<str>), result: &str) {
    metrics.hedges.with_label_values(&[&**model, result]).inc();
}
