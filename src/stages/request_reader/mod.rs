//! The request stage: reads and checks a proxied call once (content type,
//! size, JSON, model, the key's allow-list) and hands the stages behind it
//! an `ApiRequest` in the call's `Call`. Non-proxy routes (`/v1/models`)
//! pass through untouched.

pub(crate) mod realtime;
mod stored;

use std::sync::Arc;

use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::call::{ApiRequest, Call, Priority};

use crate::config::{Config, Strategy};
use crate::engines::policy::Policies;
use crate::engines::queue::Scheduler;
use crate::engines::request::{parse, paths};
use crate::engines::routing::{ModelRoute, ModelRouter, ResponsePins};
use crate::engines::tokens::BodyView;
use crate::infra::metrics::Metrics;
use crate::stages::{Next, Stage};
use crate::upstream::multipart;
use crate::vocab::error::GatewayError;
use crate::vocab::{CONVERSATIONS, Endpoint, Identity, RESPONSES, Resource};

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
    policies: Policies,
    /// `[server] max_concurrency` slots, for the degradation ladder's wait estimate.
    admission: Option<Arc<Scheduler>>,
    metrics: Metrics,
    max_body_bytes: usize,
    /// `[server] body_read_timeout`: a client dripping its body is answered 408.
    body_read_timeout: Duration,
    /// `[metrics] per_key`: count requests by key name.
    per_key: bool,
    /// Which deployment holds each stored object.
    pins: Arc<ResponsePins>,
    /// `[responses] home_model`.
    home_model: Option<Arc<str>>,
}

/// What the policies did to a request, for its response.
struct Outcome {
    variant: Option<(Arc<str>, Arc<str>)>,
    degraded_from: Option<String>,
    key: Arc<str>,
}

impl RequestReader {
    pub fn new(
        router: Arc<ModelRouter>,
        policies: Policies,
        admission: Option<Arc<Scheduler>>,
        metrics: Metrics,
        config: &Config,
        pins: Arc<ResponsePins>,
    ) -> Self {
        Self {
            router,
            policies,
            admission,
            metrics,
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: config.server.body_read_timeout,
            per_key: config.metrics.per_key,
            pins,
            home_model: config.responses.home_model.as_deref().map(Arc::from),
        }
    }

    /// The queue wait ahead of a model: the gateway's slots, then the
    /// soonest of its deployments' slots.
    fn expected_wait(&self, model: &str) -> Duration {
        let gateway = self
            .admission
            .as_ref()
            .map_or(Duration::ZERO, |s| s.expected_wait());
        let deployments = self
            .router
            .route(model)
            .and_then(|route| {
                route
                    .backends()
                    .filter_map(|b| b.slots.as_ref())
                    .map(|s| s.expected_wait())
                    .min()
            })
            .unwrap_or(Duration::ZERO);
        gateway.max(deployments)
    }

    async fn read(
        &self,
        call: paths::ApiCall<'_>,
        request: Request,
    ) -> Result<(Request, Outcome), GatewayError> {
        match call {
            paths::ApiCall::Proxy {
                endpoint: Endpoint::Realtime,
                ..
            } => realtime::read(self, request),
            paths::ApiCall::Proxy {
                endpoint,
                path_model,
            } => self.read_proxied(endpoint, path_model, request).await,
            paths::ApiCall::Stored {
                resource,
                id,
                api_path,
            } => {
                let named = stored::Named {
                    resource,
                    id,
                    api_path,
                };
                stored::read(self, named, request).await
            }
        }
    }

    async fn read_proxied(
        &self,
        endpoint: Endpoint,
        path_model: Option<&str>,
        request: Request,
    ) -> Result<(Request, Outcome), GatewayError> {
        let received = tokio::time::Instant::now();
        let (mut parts, body) = request.into_parts();
        let boundary = if endpoint.takes_multipart() {
            Some(parse::multipart_boundary(&parts.headers)?.to_owned())
        } else {
            parse::check_content_type(&parts.headers)?;
            None
        };
        let body = self.read_body(&parts.headers, body).await?;
        let head = match &boundary {
            Some(boundary) => parse::multipart_head(&body, boundary, path_model)?,
            None => parse::parse_head(&body, path_model)?,
        };
        let identity = identity_of(&parts.extensions)?;
        // The allow-list is about what the client asked for (a virtual name
        // stands for whatever the operator routed it to).
        if !identity.may_use(&head.model) {
            return Err(GatewayError::ModelNotAllowed {
                model: head.model.as_ref().into(),
                key: identity.name.to_string(),
            });
        }
        let priority = priority_of(&parts.headers, &identity)?;
        let hide_usage = head.stream
            && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
            && !head.include_usage;
        let (body, view) = match &boundary {
            Some(boundary) => {
                let body = read_upload(&body, boundary, &head);
                (body.clone(), BodyView::opaque(endpoint, body.len()))
            }
            None => {
                let body = edited(&body, &head, hide_usage);
                let view = BodyView::read(endpoint, &body).await;
                (body, view)
            }
        };
        let resolved = self
            .resolve(
                endpoint,
                boundary.is_some(),
                &head.model,
                priority,
                &identity,
                &view,
            )
            .await?;
        let route = match continues(endpoint, &head)? {
            Some((resource, id)) => {
                stored::continued(self, resource, id, &resolved.model, &identity).await?
            }
            None => self
                .router
                .route(&resolved.model)
                .ok_or_else(|| GatewayError::ModelNotFound(head.model.as_ref().into()))?
                .clone(),
        };
        // A policy that changed the body wrote it from the view's fields,
        // the usage request included.
        let (body, view) = resolved.body.unwrap_or((body, view));
        let affinity = (route.strategy == Strategy::PrefixAffinity)
            .then(|| parse::affinity_key(view.json(), &body));
        let api = ApiRequest {
            endpoint,
            stream: head.stream,
            store: head.store,
            requested: Arc::from(head.model.as_ref()),
            route,
            affinity,
            priority,
            received,
            hide_usage,
            include_usage: head.include_usage,
            content_type: boundary
                .is_some()
                .then(|| parts.headers.get(http::header::CONTENT_TYPE).cloned())
                .flatten(),
            stored: None,
            body,
            view,
        };
        set_request(&mut parts.extensions, api)?;
        let outcome = Outcome {
            variant: resolved.variant,
            degraded_from: resolved.degraded_from,
            key: identity.name.clone(),
        };
        Ok((
            Request::from_parts(parts, axum::body::Body::empty()),
            outcome,
        ))
    }

    /// The body, bounded by `max_body_bytes` and `body_read_timeout` (the
    /// Messages adapter reads its body so too, before translating it).
    pub async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: axum::body::Body,
    ) -> Result<Bytes, GatewayError> {
        let body = parse::read_body(headers, body, self.max_body_bytes);
        tokio::time::timeout(self.body_read_timeout, body)
            .await
            .map_err(|_| GatewayError::BodyTimeout(self.body_read_timeout))?
    }

    /// Where objects that name no model are made and listed: `[responses]
    /// home_model`, else the first model of the config the key may use.
    fn home_route(&self, identity: &Identity) -> Result<Arc<ModelRoute>, GatewayError> {
        if let Some(model) = &self.home_model {
            if !identity.may_use(model) {
                return Err(GatewayError::ModelNotAllowed {
                    model: model.as_ref().into(),
                    key: identity.name.to_string(),
                });
            }
            return self
                .router
                .route(model)
                .cloned()
                .ok_or_else(|| GatewayError::ModelNotFound(model.as_ref().into()));
        }
        self.router
            .first_route(|model| identity.may_use(model))
            .cloned()
            .ok_or_else(|| {
                GatewayError::invalid(
                    "This key may use no model the gateway serves, so it has nowhere to keep stored objects.",
                    None,
                )
            })
    }

    /// The model (and body) the policies resolve the call to. An upload's
    /// fields are not JSON the policies could read: it is served as the
    /// model it names.
    async fn resolve(
        &self,
        endpoint: Endpoint,
        upload: bool,
        model: &str,
        priority: Priority,
        identity: &Identity,
        view: &Arc<BodyView>,
    ) -> Result<crate::engines::policy::Resolved, GatewayError> {
        if upload {
            return Ok(crate::engines::policy::Resolved {
                model: model.to_owned(),
                body: None,
                variant: None,
                degraded_from: None,
            });
        }
        let expected_wait = |model: &str| self.expected_wait(model);
        self.policies
            .resolve(endpoint, model, priority, identity, view, &expected_wait)
            .await
    }

    fn finish(&self, response: &mut Response, outcome: Outcome, started: std::time::Instant) {
        if self.per_key {
            let status = match response.status().as_u16() {
                500.. => "5xx",
                400..=499 => "4xx",
                _ => "2xx",
            };
            self.metrics
                .key_requests
                .with_label_values(&[&outcome.key, status])
                .inc();
        }
        if let Some((split, variant)) = &outcome.variant {
            let class = match response.status().as_u16() {
                500.. => "server_error",
                400..=499 => "client_error",
                _ => "ok",
            };
            self.metrics
                .split_requests
                .with_label_values(&[split, variant, class])
                .inc();
            self.metrics
                .split_latency
                .with_label_values(&[split, variant])
                .observe(started.elapsed().as_secs_f64());
            if let Ok(value) = http::HeaderValue::from_str(variant) {
                response.headers_mut().insert("x-sluice-variant", value);
            }
        }
        if let Some(from) = outcome
            .degraded_from
            .and_then(|from| http::HeaderValue::from_str(&from).ok())
        {
            response
                .headers_mut()
                .insert("x-sluice-degraded-from", from);
        }
    }
}

/// The stored object a new call continues, if it names one: a response's
/// `previous_response_id` or its `conversation` (never both, as OpenAI says).
fn continues<'h>(
    endpoint: Endpoint,
    head: &'h parse::RequestHead<'_>,
) -> Result<Option<(&'static Resource, &'h str)>, GatewayError> {
    if !endpoint.continues_stored() {
        return Ok(None);
    }
    match (&head.previous_response_id, &head.conversation) {
        (Some(_), Some(_)) => Err(GatewayError::invalid(
            "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or 'conversation'.",
            None,
        )),
        (Some(id), None) => Ok(Some((&RESPONSES, id))),
        (None, Some(id)) => Ok(Some((&CONVERSATIONS, id))),
        (None, None) => Ok(None),
    }
}

/// An upload naming the model its Azure path names (a form field spliced in).
fn read_upload(body: &Bytes, boundary: &str, head: &parse::RequestHead<'_>) -> Bytes {
    if head.model_in_body {
        return body.clone();
    }
    multipart::with_field(body, boundary, "model", &head.model)
        .map_or_else(|| body.clone(), Bytes::from)
}

/// A JSON body with the gateway's edits spliced in, in one pass: the model
/// an Azure path names, and the usage request of a stream whose client did
/// not ask for usage (Sluice meters every stream; the relay hides it again).
fn edited(body: &Bytes, head: &parse::RequestHead<'_>, hide_usage: bool) -> Bytes {
    let usage = hide_usage
        .then(|| parse::with_usage_requested(body, head))
        .flatten();
    let model = (!head.model_in_body)
        .then(|| parse::with_model(body, head, &head.model))
        .flatten();
    // The usage member goes first where both are added at the brace.
    let splices: Vec<parse::Splice> = usage.into_iter().chain(model).collect();
    if splices.is_empty() {
        return body.clone();
    }
    Bytes::from(parse::apply(body, splices))
}

/// The caller, as layer 5 put it on the call.
fn identity_of(extensions: &http::Extensions) -> Result<Arc<Identity>, GatewayError> {
    extensions
        .get::<Call>()
        .map(|call| call.identity.clone())
        .ok_or(GatewayError::Internal)
}

/// Hands the read request to the stages behind.
fn set_request(extensions: &mut http::Extensions, api: ApiRequest) -> Result<(), GatewayError> {
    let call = extensions.get_mut::<Call>().ok_or(GatewayError::Internal)?;
    call.request = Some(api);
    Ok(())
}

impl Stage for RequestReader {
    async fn call(&self, request: Request, next: impl Next) -> Response {
        // A cheap clone (shared bytes), so the path outlives the request's move.
        let uri = request.uri().clone();
        let Some(call) = paths::classify(request.method(), uri.path()) else {
            return next.run(request).await;
        };
        let started = std::time::Instant::now();
        match self.read(call, request).await {
            Ok((request, outcome)) => {
                if let Some((call, api)) = Call::proxied(request.extensions()) {
                    let span = tracing::Span::current();
                    span.record("key", &*call.identity.name);
                    span.record("model", &*api.route.name);
                }
                let mut response = next.run(request).await;
                self.finish(&mut response, outcome, started);
                response
            }
            Err(error) => error.into_response(),
        }
    }
}
