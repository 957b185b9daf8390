//! The admission stage: `[server] max_concurrency` slots across the gateway.
//! A request holds its slot until its response body ends (a stream's last
//! chunk), so slots count work in flight, not handler calls.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::call::Call;
use crate::engines::queue::{Scheduler, held_while_streaming, take_slot};
use crate::infra::metrics::Metrics;
use crate::stages::{Next, Stage};

/// Layer 9: a slot, or a wait in the fair priority queue for one.
pub struct Admit {
    pub scheduler: Arc<Scheduler>,
    pub metrics: Metrics,
}

impl Stage for Admit {
    async fn call(&self, request: Request, next: impl Next) -> Response {
        let Some((call, api)) = Call::proxied(request.extensions()) else {
            return next.run(request).await;
        };
        let started = tokio::time::Instant::now();
        let priority = api.priority;
        let taken = take_slot(
            &self.scheduler,
            priority,
            call.identity.id.clone(),
            &self.metrics,
            || "this gateway".into(),
        )
        .await;
        super::trace_event(&request, "sluice.queue", started, || {
            vec![
                ("sluice.priority", priority.as_str().into()),
                ("sluice.queue.admitted", taken.is_ok().into()),
            ]
        });
        let slot = match taken {
            Ok(slot) => slot,
            Err(error) => return error.into_response(),
        };
        let response = next.run(request).await;
        let streaming = crate::util::headers::is_event_stream(response.headers());
        if !streaming {
            return response;
        }
        let (parts, body) = response.into_parts();
        let body = held_while_streaming(body.into_data_stream(), slot);
        Response::from_parts(parts, Body::from_stream(body))
    }
}
