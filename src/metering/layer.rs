//! The budget layer: after the cache (a hit costs nothing, so it is served
//! even on a spent budget), before limits and queues.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service};
use tracing::Instrument;

use super::Budgets;
use crate::request::call_of;
use crate::sync_layer::SyncFuture;
use crate::usage::{Finished, Outcome, UsageHooks, UsageObserver};

#[derive(Clone)]
pub struct EnforceBudgets(pub Arc<Budgets>);

impl<S> Layer<S> for EnforceBudgets {
    type Service = Enforce<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Enforce {
            budgets: self.0.clone(),
            inner,
        }
    }
}

/// Refuses a call whose key or org has spent a budget and bills the rest.
/// In-memory budgets answer in place; Redis ones wait for a round trip.
#[derive(Clone)]
pub struct Enforce<S> {
    budgets: Arc<Budgets>,
    inner: S,
}

impl<S> Service<Request> for Enforce<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<SyncFuture<S::Future, ()>, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let Some((_, identity)) = call_of(request.extensions()) else {
            return Either::Left(SyncFuture::calling(self.inner.call(request), None));
        };
        let charge = Charge {
            budgets: self.budgets.clone(),
            key: identity.id.clone(),
            org: identity.org.clone(),
        };
        match self.budgets.check_local(&charge.key, charge.org.as_deref()) {
            // The request layer has read the body already: nothing to drain.
            Some(Err(refusal)) => Either::Left(SyncFuture::refused(Box::pin(std::future::ready(
                refusal.into_response(),
            )))),
            Some(Ok(())) => {
                charge.bill_when_finished(&mut request);
                Either::Left(SyncFuture::calling(self.inner.call(request), None))
            }
            None => {
                // The inner service was made ready for this call: take it.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                Either::Right(Box::pin(charge.check_shared(request, ready)))
            }
        }
    }
}

/// Bills a finished call, at the price of the model that served it, to its
/// key's and org's budgets.
struct Charge {
    budgets: Arc<Budgets>,
    key: Arc<str>,
    org: Option<Arc<str>>,
}

impl Charge {
    fn bill_when_finished(self, request: &mut Request) {
        request
            .extensions_mut()
            .get_or_insert_default::<UsageHooks>()
            .add(Box::new(self));
    }

    async fn check_shared<S>(
        self,
        mut request: Request,
        mut inner: S,
    ) -> Result<Response, Infallible>
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        if let Err(refusal) = self.budgets.check(&self.key, self.org.as_deref()).await {
            return Ok(refusal.into_response());
        }
        self.bill_when_finished(&mut request);
        inner.call(request).await
    }
}

impl UsageObserver for Charge {
    fn finish(self: Box<Self>, finished: &Finished<'_>) {
        let Outcome::Reported(_) = finished.outcome else {
            return;
        };
        let cost = finished.cost_usd;
        if self.budgets.is_shared() {
            let tasks = self.budgets.tasks.clone();
            let charge = async move {
                self.budgets
                    .charge(&self.key, self.org.as_deref(), cost)
                    .await;
            };
            // Its failure's line belongs to the call that spent.
            tasks.spawn(charge.in_current_span());
            return;
        }
        // In-memory counters never wait: charged in place, without a task.
        let charge = std::pin::pin!(self.budgets.charge(&self.key, self.org.as_deref(), cost));
        if charge.now_or_never().is_none() {
            tracing::error!(
                "an in-memory budget charge did not complete at once; it is not counted"
            );
        }
    }
}
