//! The rate-limit layer: sits after auth and the request layer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{Check, Limiter};
use crate::request::call_of;
use crate::routing::ChosenBackend;
use crate::usage::UsageHooks;

pub async fn rate_limit(
    State(limiter): State<Arc<Limiter>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some((api, identity)) = call_of(request.extensions()) else {
        return next.run(request).await;
    };
    let admission = match limiter.check(identity, api).await {
        Check::Unlimited => return next.run(request).await,
        Check::Refused(response) => return response,
        Check::Admitted(admission) => admission,
    };
    let extensions = request.extensions_mut();
    if let Some(backend) = admission.backend {
        extensions.insert(ChosenBackend(backend));
    }
    extensions.insert(admission.quotas);
    if let Some(settlement) = admission.settlement {
        extensions
            .get_or_insert_default::<UsageHooks>()
            .add(Box::new(settlement));
    }
    let mut response = next.run(request).await;
    admission.key_headers.apply(response.headers_mut());
    response
}
