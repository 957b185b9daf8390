//! The admission layer: `[server] max_concurrency` slots across the gateway.
//! A request holds its slot until its response body ends (a stream's last
//! chunk), so slots count work in flight, not handler calls.

use std::sync::Arc;

use super::{Scheduler, held_while_streaming, take_slot};
use crate::metrics::Metrics;
use crate::request::call_of;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn admit(
    State((scheduler, metrics)): State<(Arc<Scheduler>, Metrics)>,
    request: Request,
    next: Next,
) -> Response {
    let Some((api, identity)) = call_of(request.extensions()) else {
        return next.run(request).await;
    };
    let slot = match take_slot(
        &scheduler,
        api.priority,
        identity.id.clone(),
        &metrics,
        || "this gateway".into(),
    )
    .await
    {
        Ok(slot) => slot,
        Err(error) => return error.into_response(),
    };
    let response = next.run(request).await;
    let streaming = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = held_while_streaming(body.into_data_stream(), slot);
    Response::from_parts(parts, Body::from_stream(body))
}
