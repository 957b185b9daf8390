//! Layer 5, the entry stage: the caller's identity, and the call's [`Call`].

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::call::Call;
use crate::engines::auth::Authenticate;
use crate::stages::{Next, Stage};
use crate::util::drain::refuse_after_drain;
use crate::vocab::error::GatewayError;
use crate::vocab::{Discount, Identity};

/// Layer 5: how a call gets its identity, and its [`Call`]. HTTP calls
/// authenticate, and their identity goes on the response too (access log,
/// metrics); calls of the internal adapter (a key's semantic-cache
/// embedding) come with the identity they act for already attached, and one
/// without is a bug, answered 500 rather than run unattributed.
#[derive(Clone)]
pub enum Entry {
    Http(Authenticate),
    Internal,
}

impl Stage for Entry {
    async fn call(&self, mut request: Request, next: impl Next) -> Response {
        let found = match self {
            Self::Http(authenticate) => authenticate.identity(&request),
            Self::Internal => request
                .extensions_mut()
                .remove::<Arc<Identity>>()
                .ok_or_else(|| Box::new(GatewayError::Internal.into_response())),
        };
        let identity = match found {
            Ok(identity) => identity,
            Err(refusal) => return refuse_after_drain(request, *refusal).await,
        };
        let call = Call::new(identity.clone());
        if let Some(discount) = request.extensions_mut().remove::<Discount>() {
            call.hooks.discount(discount);
        }
        request.extensions_mut().insert(call);
        let mut response = next.run(request).await;
        if let Self::Http(_) = self {
            response.extensions_mut().insert(identity);
        }
        response
    }
}
