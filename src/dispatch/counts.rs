//! `POST /responses/input_tokens` where the deployment cannot count (an
//! Azure deployment or an older OpenAI-compatible server answers 404, 405
//! or 501): Sluice counts with the model's tokenizer, as the endpoint
//! counts (input, instructions and tools), and says so in a header.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::engines::tokens::{Encoding, responses_input_tokens};

/// The header on an answer Sluice counted itself.
pub const COUNTED_HEADER: &str = "x-sluice-counted";

/// An answer that means the deployment has no such endpoint.
pub fn cannot_count(status: StatusCode) -> bool {
    matches!(status.as_u16(), 404 | 405 | 501)
}

/// The count of `request` (a Responses body), as OpenAI answers it, from
/// the deployment that could not count.
pub fn local_count(request: &[u8], encoding: Encoding, deployment: &HeaderValue) -> Response {
    let tokens = match serde_json::from_slice::<Value>(request) {
        Ok(Value::Object(request)) => responses_input_tokens(&request, encoding),
        _ => 0,
    };
    let body = json!({"object": "response.input_tokens", "input_tokens": tokens}).to_string();
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(COUNTED_HEADER, HeaderValue::from_static("sluice"));
    headers.insert(super::DEPLOYMENT_HEADER, deployment.clone());
    response
}
