//! The budget layer: after the cache (a hit costs nothing, so it is served
//! even on a spent budget), before limits and queues.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use super::{Budgets, Pricing};
use crate::request::call_of;
use crate::usage::{Outcome, UsageHooks, UsageObserver};

pub async fn enforce(
    State((budgets, pricing)): State<(Arc<Budgets>, Arc<Pricing>)>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some((api, identity)) = call_of(request.extensions()) else {
        return next.run(request).await;
    };
    if let Err(error) = budgets.check(&identity.name, identity.org.as_deref()).await {
        return error.into_response();
    }
    let charge = Charge {
        budgets,
        pricing,
        key: identity.name.clone(),
        org: identity.org.clone(),
        model: api.route.name.clone(),
    };
    request
        .extensions_mut()
        .get_or_insert_default::<UsageHooks>()
        .add(Box::new(charge));
    next.run(request).await
}

/// Bills a finished call to its key's and org's budgets.
struct Charge {
    budgets: Arc<Budgets>,
    pricing: Arc<Pricing>,
    key: Arc<str>,
    org: Option<Arc<str>>,
    model: Arc<str>,
}

impl UsageObserver for Charge {
    fn finish(self: Box<Self>, outcome: Outcome) {
        let Outcome::Reported(usage) = outcome else {
            return;
        };
        let cost = self.pricing.cost(&self.model, &usage);
        let mut charge = Box::pin(async move {
            self.budgets
                .charge(&self.key, self.org.as_deref(), cost)
                .await;
        });
        // In-memory counters finish at once; only Redis needs a task.
        if (&mut charge).now_or_never().is_none() {
            tokio::spawn(charge);
        }
    }
}
