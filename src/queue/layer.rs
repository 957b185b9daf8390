//! The admission layer: `[server] max_concurrency` slots across the gateway.
//! A request holds its slot until its response body ends (a stream's last
//! chunk), so slots count work in flight, not handler calls.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{Rejected, Scheduler};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::request::call_of;

pub async fn admit(
    State((scheduler, metrics)): State<(Arc<Scheduler>, Metrics)>,
    request: Request,
    next: Next,
) -> Response {
    let Some((api, identity)) = call_of(request.extensions()) else {
        return next.run(request).await;
    };
    let started = tokio::time::Instant::now();
    let acquired = scheduler.acquire(api.priority, identity.name.clone()).await;
    metrics
        .queue_wait
        .with_label_values(&[api.priority.as_str()])
        .observe(started.elapsed().as_secs_f64());
    let slot = match acquired {
        Ok(slot) => slot,
        Err(Rejected::Full { retry_after } | Rejected::TimedOut { retry_after }) => {
            return GatewayError::Overloaded {
                what: "this gateway".into(),
                retry_after,
            }
            .into_response();
        }
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
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}
