//! The auth middleware: `Authorization: Bearer <key>` (OpenAI SDKs) or
//! `api-key: <key>` (Azure-style clients).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::{Identity, KeyStore};
use crate::sync_layer::Middleware;

/// Resolves the presented key to an `Identity` on the request (for the
/// layers behind) and on the response (for the access log and metrics).
#[derive(Clone)]
pub struct Authenticate(pub Arc<KeyStore>);

impl Middleware for Authenticate {
    type Carry = Arc<Identity>;

    fn before(&self, request: &mut Request) -> Result<Arc<Identity>, Box<Response>> {
        let identity = self
            .0
            .resolve(presented_key(request.headers()))
            .map_err(|error| Box::new(error.into_response()))?;
        request.extensions_mut().insert(identity.clone());
        Ok(identity)
    }

    fn after(identity: Arc<Identity>, response: &mut Response) {
        response.extensions_mut().insert(identity);
    }
}

/// The key from `Authorization: Bearer <key>` (any case of `Bearer`, or
/// none) or from `api-key`, trimmed; `None` when absent or empty.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        return (!token.is_empty()).then_some(token);
    }
    headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
