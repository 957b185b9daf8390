//! The budget stage: after the cache (a hit costs nothing, so it is served
//! even on a spent budget), before limits and queues.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::call::Call;
use crate::engines::metering::Budgets;
use crate::stages::{Next, Stage};
use crate::vocab::{Finished, Outcome, UsageObserver};

/// Layer 7b: refuses a call whose key or org has spent a budget and bills
/// the rest. In-memory budgets answer in place; Redis ones wait for a round
/// trip.
pub struct EnforceBudgets(pub Arc<Budgets>);

impl Stage for EnforceBudgets {
    async fn call(&self, request: Request, next: impl Next) -> Response {
        let Some((call, _)) = Call::proxied(request.extensions()) else {
            return next.run(request).await;
        };
        let (key, org) = (call.identity.id.clone(), call.identity.org.clone());
        let budgets = &self.0;
        let checked = match budgets.check_local(&key, org.as_deref()) {
            Some(checked) => checked,
            None => budgets.check(&key, org.as_deref()).await,
        };
        // The request stage has read the body already: nothing to drain.
        if let Err(refusal) = checked {
            return refusal.into_response();
        }
        let charge = Charge {
            budgets: budgets.clone(),
            key,
            org,
        };
        call.hooks.add(Box::new(charge));
        next.run(request).await
    }
}

/// Bills a finished call, at the price of the model that served it, to its
/// key's and org's budgets.
struct Charge {
    budgets: Arc<Budgets>,
    key: Arc<str>,
    org: Option<Arc<str>>,
}

impl UsageObserver for Charge {
    fn finish(self: Box<Self>, finished: &Finished<'_>) {
        if let Outcome::Reported(_) = finished.outcome {
            self.budgets.bill(self.key, self.org, finished.cost_usd);
        }
    }
}
