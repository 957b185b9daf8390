//! OpenAI-shaped answers for what axum would otherwise answer itself.

use std::any::Any;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::util::drain::refuse_after_drain;
use crate::vocab::error::GatewayError;

pub async fn unknown_route(request: Request) -> Response {
    let error = GatewayError::UnknownRoute {
        method: request.method().as_str().into(),
        path: request.uri().path().into(),
    };
    refuse_after_drain(request, error.into_response()).await
}

pub async fn method_not_allowed(request: Request) -> Response {
    let error = GatewayError::MethodNotAllowed {
        method: request.method().as_str().into(),
        path: request.uri().path().into(),
    };
    refuse_after_drain(request, error.into_response()).await
}

pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = detail, "request handler panicked");
    GatewayError::Internal.into_response()
}
