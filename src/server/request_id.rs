//! The request id: the client's `x-request-id` when it is a short visible
//! ASCII token, else one Sluice makes. The same id is logged, sent upstream,
//! recorded in the ledger and answered with, replacing whatever the inner
//! layers put on the response (an upstream's own id travels as
//! `x-upstream-request-id`).

use axum::extract::Request;
use axum::response::Response;
use http::HeaderValue;

use crate::infra::sync_layer::Middleware;
use crate::util::headers::{X_REQUEST_ID, is_id};

#[derive(Clone, Copy, Default)]
pub struct RequestIds;

impl Middleware for RequestIds {
    type Carry = HeaderValue;

    fn before(&self, request: &mut Request) -> Result<HeaderValue, Box<Response>> {
        let headers = request.headers_mut();
        if let Some(id) = headers.get(X_REQUEST_ID).filter(|id| is_id(id)) {
            return Ok(id.clone());
        }
        let id = new_id();
        headers.insert(X_REQUEST_ID, id.clone());
        Ok(id)
    }

    fn after(id: HeaderValue, response: &mut Response) {
        response.headers_mut().insert(X_REQUEST_ID, id);
    }
}

fn new_id() -> HeaderValue {
    let id = format!("req_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_unknown"))
}
