//! One structured line per request. Layers and the dispatcher leave what they
//! learned (identity, model, deployment, error) in the response extensions.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{AuthRefused, Identity};
use crate::dispatch::ServedBy;
use crate::error::{ErrorLogged, clip};
use crate::headers::X_REQUEST_ID;

/// Latency is to the response head; a stream's body may run on after it.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The path is the client's: quoted with a bound, like every echo.
    let path = clip(request.uri().path()).into_owned();
    let request_id = request.headers().get(X_REQUEST_ID).cloned();
    let response = next.run(request).await;
    let extensions = response.extensions();
    let served = extensions.get::<ServedBy>();
    // Refused credentials are counted and logged in the aggregate by the
    // auth guard; one info line each would let a flood of bad keys flood
    // the log.
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "sluice::access",
                $level,
                request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                %method,
                path,
                status = response.status().as_u16(),
                key = extensions.get::<Arc<Identity>>().map_or("-", |i| &*i.name),
                model = served.map_or("-", |s| &*s.model),
                deployment = served.map_or("-", |s| &*s.deployment),
                latency_us = started.elapsed().as_micros() as u64,
                error = extensions.get::<ErrorLogged>().map(|e| e.0.as_str()),
            )
        };
    }
    if extensions.get::<AuthRefused>().is_some() {
        line!(tracing::Level::DEBUG);
    } else {
        line!(tracing::Level::INFO);
    }
    response
}
