//! Request ids for requests that arrive without one.

use http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

#[derive(Clone, Copy, Default)]
pub struct RequestIds;

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = format!("req_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}
