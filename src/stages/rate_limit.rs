//! The rate-limit stage: after auth, the request stage, the cache and
//! budgets.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;

use crate::call::Call;
use crate::engines::limits::{CallFacts, Check, Limiter};
use crate::stages::{Next, Stage};

/// Layer 8: RPM/TPM per key, org and model; picks a deployment with quota
/// for the dispatcher's first attempt.
pub struct RateLimit(pub Arc<Limiter>);

impl Stage for RateLimit {
    async fn call(&self, mut request: Request, next: impl Next) -> Response {
        let Some((call, api)) = Call::proxied(request.extensions()) else {
            return next.run(request).await;
        };
        let facts = CallFacts {
            route: &api.route,
            view: &api.view,
            endpoint: api.endpoint,
            affinity: api.affinity,
        };
        let started = tokio::time::Instant::now();
        let check = self.0.check(&call.identity, facts).await;
        let decision = match &check {
            Check::Unlimited => "unlimited",
            Check::Refused(_) => "refused",
            Check::Admitted(_) => "admitted",
        };
        super::trace_event(&request, "sluice.rate_limit", started, || {
            let mut attrs = vec![("sluice.rate_limit.decision", decision.into())];
            if let Check::Admitted(admission) = &check
                && let Some(backend) = &admission.backend
            {
                attrs.push(("sluice.deployment", (&backend.deployment.name).into()));
            }
            attrs
        });
        let admission = match check {
            Check::Unlimited => return next.run(request).await,
            Check::Refused(response) => return response,
            Check::Admitted(admission) => admission,
        };
        if let Some(call) = Call::proxied_mut(request.extensions_mut()) {
            call.backend = admission.backend;
            call.quotas = admission.quotas;
            if let Some(settlement) = admission.settlement {
                call.hooks.add(Box::new(settlement));
            }
        }
        let mut response = next.run(request).await;
        admission.key_headers.apply(response.headers_mut());
        response
    }
}
