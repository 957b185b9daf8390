//! The request layer: reads and checks a proxied call once (content type,
//! size, JSON, model, the key's allow-list) and hands the layers behind it
//! an `ApiRequest`. Non-proxy routes (`/v1/models`) pass through untouched.

mod parse;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::auth::Identity;
use crate::config::{Priority, Strategy};
use crate::error::GatewayError;
use crate::routing::{ModelRoute, ModelRouter};
use crate::upstream::Endpoint;

/// A proxied call as the layers behind the request layer see it.
#[derive(Clone)]
pub struct ApiRequest {
    pub endpoint: Endpoint,
    /// The client's bytes, forwarded as received.
    pub body: Bytes,
    pub route: Arc<ModelRoute>,
    pub stream: bool,
    /// Hash of the prompt's identity, for `prefix_affinity` routing.
    pub affinity: Option<u64>,
    /// The request's class in the admission queues.
    pub priority: Priority,
}

/// The call and its caller, for the layers behind the request layer; `None`
/// on routes that are not proxied.
pub fn call_of(extensions: &http::Extensions) -> Option<(&ApiRequest, &Arc<Identity>)> {
    Some((
        extensions.get::<ApiRequest>()?,
        extensions.get::<Arc<Identity>>()?,
    ))
}

/// `x-sluice-priority`, capped by the key's `max_priority`; else the key's
/// `priority`; else `standard`.
fn priority_of(headers: &http::HeaderMap, identity: &Identity) -> Result<Priority, GatewayError> {
    let asked = match headers.get("x-sluice-priority") {
        Some(value) => Some(value.to_str().ok().and_then(Priority::parse).ok_or_else(|| {
            GatewayError::invalid(
                "The x-sluice-priority header must be one of critical, realtime, standard, batch, low.",
                None,
            )
        })?),
        None => None,
    };
    let class = asked.or(identity.priority).unwrap_or(Priority::Standard);
    // Lower index is higher priority: a cap raises the index.
    Ok(identity.max_priority.map_or(class, |cap| class.max(cap)))
}

pub struct RequestReader {
    router: Arc<ModelRouter>,
    max_body_bytes: usize,
}

impl RequestReader {
    pub fn new(router: Arc<ModelRouter>, max_body_bytes: usize) -> Self {
        Self {
            router,
            max_body_bytes,
        }
    }

    async fn read(&self, endpoint: Endpoint, request: Request) -> Result<Request, GatewayError> {
        let (mut parts, body) = request.into_parts();
        parse::check_content_type(&parts.headers)?;
        let body = parse::read_body(&parts.headers, body, self.max_body_bytes).await?;
        let head = parse::parse_head(&body)?;
        let route = self
            .router
            .route(&head.model)
            .ok_or_else(|| GatewayError::ModelNotFound(head.model.to_string()))?
            .clone();
        let identity = parts
            .extensions
            .get::<Arc<Identity>>()
            .ok_or(GatewayError::Internal)?;
        if !identity.may_use(&route.name) {
            return Err(GatewayError::ModelNotAllowed {
                model: route.name.to_string(),
                key: identity.name.to_string(),
            });
        }
        let affinity =
            (route.strategy == Strategy::PrefixAffinity).then(|| parse::affinity_key(&body));
        let priority = priority_of(&parts.headers, identity)?;
        let api = ApiRequest {
            endpoint,
            stream: head.stream,
            route,
            affinity,
            priority,
            body: body.clone(),
        };
        parts.extensions.insert(api);
        Ok(Request::from_parts(parts, axum::body::Body::empty()))
    }
}

pub async fn read_request(
    State(reader): State<Arc<RequestReader>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(endpoint) = Endpoint::from_path(request.uri().path()) else {
        return next.run(request).await;
    };
    match reader.read(endpoint, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}
