//! The dispatcher: the innermost service. Reads the request, picks a
//! deployment for its model, forwards it, and relays the answer.

mod models;
mod relay;
mod respond;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::error::GatewayError;
use crate::request::ApiRequest;
use crate::routing::{ChosenDeployment, ModelRoute, ModelRouter};
use crate::shutdown::Cut;
use crate::upstream::{
    Deployment, UpstreamClient, UpstreamError, UpstreamRequest, UpstreamResponse,
};
use crate::usage::{self, Outcome, UsageHooks};

pub use models::{get_model, list_models};
pub use relay::KEEPALIVE_COMMENT;

pub const DEPLOYMENT_HEADER: &str = "x-sluice-deployment";

/// Shared by every request; immutable after start-up.
pub struct Dispatcher {
    router: Arc<ModelRouter>,
    client: UpstreamClient,
    request_timeout: Duration,
    keepalive: Duration,
    /// Fired when the shutdown grace period is over: open streams end.
    cut: Cut,
}

/// Which model and deployment served a request, for the access log.
#[derive(Clone)]
pub struct ServedBy {
    pub model: Arc<str>,
    pub deployment: Arc<str>,
}

impl Dispatcher {
    pub fn new(
        router: Arc<ModelRouter>,
        client: UpstreamClient,
        server: &crate::config::ServerConfig,
        cut: Cut,
    ) -> Self {
        Self {
            router,
            client,
            request_timeout: server.request_timeout,
            keepalive: server.stream_keepalive,
            cut,
        }
    }

    pub fn router(&self) -> &ModelRouter {
        &self.router
    }

    pub async fn handle(self: Arc<Self>, request: Request) -> Response {
        self.dispatch(request)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    }

    fn relay_settings(&self, deployment: &Deployment) -> relay::RelaySettings {
        relay::RelaySettings {
            deployment: deployment.name.clone(),
            keepalive: self.keepalive,
            idle_timeout: deployment.timeout,
            cut: self.cut.clone(),
        }
    }

    async fn dispatch(self: Arc<Self>, request: Request) -> Result<Response, GatewayError> {
        let (mut parts, _) = request.into_parts();
        let ApiRequest {
            endpoint,
            body,
            route,
            stream,
        } = parts
            .extensions
            .remove::<ApiRequest>()
            .ok_or(GatewayError::Internal)?;
        let deployment = match parts.extensions.remove::<ChosenDeployment>() {
            Some(ChosenDeployment(deployment)) => deployment,
            None => route.pick().ok_or(GatewayError::Internal)?.clone(),
        };
        let upstream_request = UpstreamRequest {
            endpoint,
            client_model: route.name.clone(),
            body,
            request_id: parts.headers.get("x-request-id").cloned(),
            openai_beta: parts.headers.get("openai-beta").cloned(),
        };
        let call = UpstreamCall {
            client: self.client.clone(),
            deployment,
            route,
            hooks: parts.extensions.remove::<UsageHooks>(),
        };
        if stream {
            self.stream(call, upstream_request).await
        } else {
            let deadline = self.request_timeout;
            let deployment = call.deployment.name.clone();
            tokio::time::timeout(deadline, call.complete(upstream_request))
                .await
                .map_err(|_| GatewayError::UpstreamTimeout {
                    deployment: deployment.to_string(),
                    timeout_ms: deadline.as_millis(),
                })?
        }
    }

    /// Waits for upstream headers up to one keep-alive interval, so an early
    /// upstream error keeps its status; after that the client gets 200 and
    /// keep-alives, and a late error arrives as an SSE error event.
    async fn stream(
        &self,
        call: UpstreamCall,
        request: UpstreamRequest,
    ) -> Result<Response, GatewayError> {
        let header_timeout = call.deployment.timeout.min(self.request_timeout);
        let settings = self.relay_settings(&call.deployment);
        let mut pending: relay::PendingResponse =
            Box::pin(call.clone().start(request, header_timeout));
        tokio::select! {
            biased;
            result = &mut pending => {
                let response = result?;
                if !response.status.is_success() {
                    return Ok(call.error_response(response).await);
                }
                let mut builder = call.response_builder(response.status, &response.headers);
                let relay = relay::SseRelay::streaming(response.body, settings, call.hooks.clone());
                builder.body = Body::from_stream(relay);
                Ok(builder.finish())
            }
            () = tokio::time::sleep(self.keepalive) => {
                let mut headers = http::HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                let mut builder = call.response_builder(StatusCode::OK, &headers);
                let relay = relay::SseRelay::awaiting(pending, settings, call.hooks.clone());
                builder.body = Body::from_stream(relay);
                Ok(builder.finish())
            }
        }
    }
}

/// One call to one deployment.
#[derive(Clone)]
struct UpstreamCall {
    client: UpstreamClient,
    deployment: Arc<Deployment>,
    route: Arc<ModelRoute>,
    /// Layers waiting for the call's token usage.
    hooks: Option<UsageHooks>,
}

impl UpstreamCall {
    /// Sends and waits for the response headers, bounded by `timeout`.
    async fn start(
        self,
        request: UpstreamRequest,
        timeout: Duration,
    ) -> Result<UpstreamResponse, GatewayError> {
        let name = &self.deployment.name;
        match tokio::time::timeout(timeout, self.client.send(&self.deployment, request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                // A refused connection produced nothing; anything later might have.
                let outcome = match error {
                    UpstreamError::Connect(_) => Outcome::NoOutput,
                    _ => Outcome::Unknown,
                };
                self.finish(outcome);
                Err(respond::upstream_failure(name, &error))
            }
            Err(_) => {
                self.finish(Outcome::Unknown);
                Err(GatewayError::UpstreamTimeout {
                    deployment: name.to_string(),
                    timeout_ms: timeout.as_millis(),
                })
            }
        }
    }

    fn finish(&self, outcome: Outcome) {
        if let Some(hooks) = &self.hooks {
            hooks.finish(outcome);
        }
    }

    /// A non-streaming call: the whole body is read, then sent on unchanged.
    async fn complete(self, request: UpstreamRequest) -> Result<Response, GatewayError> {
        let timeout = self.deployment.timeout;
        let response = self.clone().start(request, timeout).await?;
        if !response.status.is_success() {
            return Ok(self.error_response(response).await);
        }
        let mut builder = self.response_builder(response.status, &response.headers);
        let body = respond::collect_body(response.body, &self.deployment.name, timeout)
            .await
            .inspect_err(|_| self.finish(Outcome::Unknown))?;
        if self.hooks.is_some() {
            self.finish(usage::parse(&body).map_or(Outcome::Unknown, Outcome::Reported));
        }
        builder.body = Body::from(body);
        Ok(builder.finish())
    }

    async fn error_response(&self, response: UpstreamResponse) -> Response {
        self.finish(Outcome::NoOutput);
        let status = response.status;
        let headers = response.headers.clone();
        let body = respond::collect_error_body(response, self.deployment.name.clone()).await;
        let mut builder = self.response_builder(status, &headers);
        builder.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        builder.body = Body::from(body);
        builder.finish()
    }

    fn response_builder(&self, status: StatusCode, upstream: &http::HeaderMap) -> ResponseParts {
        let mut headers = http::HeaderMap::with_capacity(upstream.len() + 2);
        respond::copy_headers(upstream, &mut headers);
        headers.insert(DEPLOYMENT_HEADER, self.deployment.name_header.clone());
        ResponseParts {
            status,
            headers,
            body: Body::empty(),
            served_by: ServedBy {
                model: self.route.name.clone(),
                deployment: self.deployment.name.clone(),
            },
        }
    }
}

struct ResponseParts {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Body,
    served_by: ServedBy,
}

impl ResponseParts {
    fn finish(self) -> Response {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response.extensions_mut().insert(self.served_by);
        response
    }
}
