//! The dispatcher: the innermost service. Runs the attempts (retries and
//! failover) for a request the layers admitted, and relays the answer.

mod attempt;
mod attempts;
mod choose;
mod counts;
mod gate;
mod hedge;
pub(crate) mod hide_usage;
mod models;
mod outcome;
mod passthrough;
mod pins;
mod progress;
pub mod realtime;
mod relay;
mod respond;
mod stored;
mod trace;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::time::Instant;

use self::attempts::{Failure, FailureKind, Outbound, Reply, Success};
use self::hide_usage::UsageHider;
use crate::call::Call;
use crate::config::{Config, RetryConfig};
use crate::engines::metering::Pricing;
use crate::engines::routing::{ModelRouter, ResponsePin, ResponsePins};
use crate::infra::metrics::Metrics;
use crate::infra::otel::LiveSpan;
use crate::infra::sse::usage;
use crate::upstream::{UpstreamClient, UpstreamRequest};
use crate::util::shutdown::Cut;
use crate::vocab::Endpoint;
use crate::vocab::error::GatewayError;
use crate::vocab::{Finished, Outcome, Served, UsageHooks, UsageObserver};
use crate::vocab::{Hedged, ServedBy, UpstreamTime};

pub use models::{get_model, list_models};

pub const DEPLOYMENT_HEADER: &str = "x-sluice-deployment";
pub const ATTEMPTS_HEADER: &str = "x-sluice-attempts";

/// What a snapshot's dispatcher is built on.
pub struct DispatcherParts {
    pub router: Arc<ModelRouter>,
    pub client: UpstreamClient,
    /// Fired when the shutdown grace period is over.
    pub cut: Cut,
    pub metrics: Metrics,
    pub pricing: Arc<Pricing>,
    pub pins: Arc<ResponsePins>,
    /// Each key's open Realtime sessions (live state, kept across snapshots).
    pub sessions: Arc<realtime::Sessions>,
    /// Owns the Realtime sessions' tasks.
    pub tasks: crate::util::tasks::Tasks,
}

/// Shared by every request; immutable after start-up.
pub struct Dispatcher {
    router: Arc<ModelRouter>,
    client: UpstreamClient,
    retry: Arc<RetryConfig>,
    request_timeout: Duration,
    max_response_bytes: usize,
    keepalive: Duration,
    /// Fired when the shutdown grace period is over: open streams end.
    cut: Cut,
    metrics: Metrics,
    pricing: Arc<Pricing>,
    /// Which deployment created each stored response, recorded here.
    pins: Arc<ResponsePins>,
    realtime: realtime::Realtime,
    /// Each model's tokenizer, for the counts Sluice makes itself.
    encodings: crate::engines::tokens::Encodings,
}

impl Dispatcher {
    pub fn new(parts: DispatcherParts, config: &Config) -> Self {
        Self {
            metrics: parts.metrics,
            pricing: parts.pricing,
            pins: parts.pins,
            router: parts.router,
            client: parts.client,
            retry: Arc::new(config.retry.clone()),
            request_timeout: config.server.request_timeout,
            max_response_bytes: config.server.max_response_bytes,
            keepalive: config.server.stream_keepalive,
            encodings: crate::engines::tokens::Encodings::from_config(&config.models),
            realtime: realtime::Realtime {
                config: config.realtime.clone(),
                sessions: parts.sessions,
                tasks: parts.tasks,
                cut: parts.cut.clone(),
            },
            cut: parts.cut,
        }
    }

    pub fn router(&self) -> &Arc<ModelRouter> {
        &self.router
    }

    pub async fn handle(self: Arc<Self>, request: Request) -> Response {
        self.dispatch(request)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    }

    async fn dispatch(self: Arc<Self>, request: Request) -> Result<Response, GatewayError> {
        let (mut parts, _) = request.into_parts();
        let Call {
            identity,
            request: api,
            hooks,
            backend: first,
            quotas,
            ..
        } = parts
            .extensions
            .remove::<Call>()
            .ok_or(GatewayError::Internal)?;
        let api = api.ok_or(GatewayError::Internal)?;
        let caller = identity.id.clone();
        if api.endpoint == Endpoint::Realtime {
            let session = realtime::SessionCall {
                parts,
                api,
                caller,
                hooks,
                pricing: self.pricing.clone(),
            };
            // Boxed: a session's opening is a 12 KB future that every
            // other call would otherwise carry (and move) in its own.
            return Box::pin(self.realtime.open(session)).await;
        }
        let keeping = stored::Keeping::of(&api, &caller);
        let tracing = parts
            .extensions
            .get::<LiveSpan>()
            .map(|span| trace::CallTracing::new(span.clone(), api.endpoint, &api.body));
        let (traceparent, tracestate) = trace_headers(tracing.as_ref(), &parts.headers);
        // Speech is audio, relayed as it comes; SSE only when asked for.
        let binary = api.endpoint == Endpoint::AudioSpeech && !api.stream;
        let call = Outbound {
            client: self.client.clone(),
            retry: self.retry.clone(),
            router: self.router.clone(),
            route: api.route.clone(),
            request: UpstreamRequest {
                endpoint: api.endpoint,
                client_model: api.route.name.clone(),
                body_model: api.requested.clone(),
                body: api.body,
                request_id: parts
                    .headers
                    .get(crate::util::headers::X_REQUEST_ID)
                    .cloned(),
                openai_beta: parts.headers.get("openai-beta").cloned(),
                content_type: api.content_type,
                stored: api.stored,
                traceparent,
                tracestate,
                messages: parts.extensions.remove::<crate::vocab::MessagesBody>(),
            },
            affinity: api.affinity,
            deadline: Instant::now() + self.request_timeout,
            read_body: !api.stream && !binary,
            expect_sse: api.stream,
            max_response_bytes: self.max_response_bytes,
            priority: api.priority,
            caller: caller.clone(),
            metrics: self.metrics.clone(),
            quotas,
            trace: tracing.map(Arc::new),
            repeatable: keeping.pin.is_none(),
            legs: None,
        };
        let names = Names {
            asked: api.requested.clone(),
            routed: api.route.name.clone(),
            received: api.received,
            hide_usage: api.hide_usage,
        };
        if binary {
            Ok(self.passthrough(call, first, hooks, names).await)
        } else if api.stream {
            Ok(self.stream(call, first, hooks, names, keeping.pin).await)
        } else {
            Ok(self.complete(call, first, hooks, names, keeping).await)
        }
    }

    /// A binary answer (speech): relayed chunk by chunk, never read whole.
    async fn passthrough(
        &self,
        call: Outbound,
        first: Option<Arc<crate::engines::routing::Backend>>,
        hooks: UsageHooks,
        names: Names,
    ) -> Response {
        let requested = names.routed.clone();
        match hedge::run(call, first).await {
            Ok(success) => {
                self.observer().observe(&success, &requested, &hooks);
                let timeout = success.backend.deployment.timeout;
                let (parts, reply) = success_parts(success, &names);
                let Reply::Stream(body) = reply else {
                    return GatewayError::Internal.into_response();
                };
                let relay = passthrough::Passthrough::new(body, timeout, self.cut.clone(), hooks);
                parts.finish(Body::from_stream(relay))
            }
            Err(failure) => {
                self.observer().count_retries(&requested, failure.attempts);
                finish_failed(&hooks, &failure);
                failure_response(failure)
            }
        }
    }

    /// Waits for a successful response head up to one keep-alive interval, so
    /// an early failure keeps its status; after that the client gets 200 and
    /// keep-alives, and a late failure arrives as an SSE error event.
    async fn stream(
        &self,
        call: Outbound,
        first: Option<Arc<crate::engines::routing::Backend>>,
        hooks: UsageHooks,
        names: Names,
        pin: Option<Arc<str>>,
    ) -> Response {
        let requested = names.routed.clone();
        let (received, hide_usage) = (names.received, names.hide_usage);
        let first_token = (
            self.metrics
                .time_to_first_token
                .with_label_values(&[&*names.routed]),
            received,
        );
        let mut pending = Box::pin(hedge::run(call, first));
        tokio::select! {
            biased;
            result = &mut pending => match result {
                Ok(mut success) => {
                    self.observer().observe(&success, &requested, &hooks);
                    let deployment = &success.backend.deployment;
                    let mut settings = self.relay_settings(&deployment.name, deployment.timeout);
                    settings.first_token = Some(first_token);
                    settings.hide_usage = hide_usage.then(UsageHider::default);
                    settings.trace = success.span.take().map(|span| (span, trace::AnswerFacts::streamed()));

                    let pin = pin.map(|owner| pin_of(&success, owner));
                    let (parts, reply) = success_parts(success, &names);
                    let Reply::Stream(body) = reply else {
                        return GatewayError::Internal.into_response();
                    };
                    let body = tapped(&self.pins, body, pin);
                    parts.relay(relay::SseRelay::streaming(body, settings, Some(hooks)))
                }
                Err(failure) => {
                    self.observer().count_retries(&requested, failure.attempts);
                    finish_failed(&hooks, &failure);
                    failure_response(failure)
                }
            },
            () = tokio::time::sleep(self.keepalive) => {
                let (observer, hooks_later) = (self.observer(), hooks.clone());
                let pins = self.pins.clone();
                let started: relay::PendingResponse = Box::pin(pending.map(move |result| match result {
                    Ok(success) => {
                        observer.observe(&success, &requested, &hooks_later);
                        let pin = pin.map(|owner| pin_of(&success, owner));
                        match success.body {
                            Reply::Stream(body) => Ok(relay::Started {
                                body: tapped(&pins, body, pin),
                                deployment: success.backend.deployment.name.clone(),
                                idle_timeout: success.backend.deployment.timeout,
                                span: success.span,
                            }),
                            Reply::Whole(_) => {
                                hooks_later.finish(Outcome::NoOutput);
                                Err(GatewayError::Internal.body())
                            }
                        }
                    }
                    // Reported here, where it is known whether an attempt may
                    // have produced; the relay only sends the error event.
                    Err(failure) => {
                        observer.count_retries(&requested, failure.attempts);
                        finish_failed(&hooks_later, &failure);
                        Err(failure_body(failure))
                    }
                }));
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                // The attempts run on; which deployment serves is not known
                // yet, so no deployment or attempts headers on this response.
                let mut settings = self.relay_settings(&Arc::from("(choosing)"), self.request_timeout);
                settings.first_token = Some(first_token);
                settings.hide_usage = hide_usage.then(UsageHider::default);
                let relay = relay::SseRelay::awaiting(started, settings, Some(hooks));
                ResponseParts { status: StatusCode::OK, headers, served_by: None, upstream_time: None, hedge: None }
                    .relay(relay)
            }
        }
    }

    /// A non-streamed call: attempts read whole bodies, then the answer goes on.
    async fn complete(
        &self,
        call: Outbound,
        first: Option<Arc<crate::engines::routing::Backend>>,
        hooks: UsageHooks,
        names: Names,
        keeping: stored::Keeping,
    ) -> Response {
        let requested = names.routed.clone();
        let endpoint = call.request.endpoint;
        let counted =
            (endpoint == Endpoint::ResponsesInputTokens).then(|| call.request.body.clone());
        match hedge::run(call, first).await {
            Ok(success) => {
                self.observer().observe(&success, &requested, &hooks);
                let pin = keeping.pin.map(|owner| pin_of(&success, owner));
                let (parts, reply) = success_parts(success, &names);
                let Reply::Whole(mut body) = reply else {
                    return GatewayError::Internal.into_response();
                };
                hooks.finish(outcome_of(endpoint, &body));
                if let Some(caller) = &keeping.list_for
                    && parts.status.is_success()
                {
                    body = stored::only_callers(&body, &self.pins, caller).await;
                }
                if let Some((id, pin)) = pin.and_then(|pin| Some((pins::created_id(&body)?, pin)))
                    && let Some(write) = self.pins.remember(&id, pin)
                {
                    // Shared before the client can name it elsewhere.
                    write.await;
                }
                parts.finish(Body::from(body))
            }
            Err(failure) => {
                self.observer().count_retries(&requested, failure.attempts);
                finish_failed(&hooks, &failure);
                if let (
                    Some(request),
                    FailureKind::Upstream {
                        backend, status, ..
                    },
                ) = (counted, &failure.error)
                    && counts::cannot_count(*status)
                {
                    let encoding = self.encodings.of(&names.routed);
                    return counts::local_count(
                        &request,
                        encoding,
                        &backend.deployment.name_header,
                    );
                }
                failure_response(failure)
            }
        }
    }

    fn observer(&self) -> Observer {
        Observer {
            metrics: self.metrics.clone(),
            pricing: self.pricing.clone(),
        }
    }

    fn relay_settings(
        &self,
        deployment: &Arc<str>,
        idle_timeout: Duration,
    ) -> relay::RelaySettings {
        relay::RelaySettings {
            deployment: deployment.clone(),
            keepalive: self.keepalive,
            idle_timeout,
            cut: self.cut.clone(),
            first_token: None,
            hide_usage: None,
            trace: None,
        }
    }
}

/// The trace context every attempt sends: Sluice's `tracestate` (each
/// attempt adds its own `traceparent`), or with tracing off the caller's
/// context passed on, re-spelled from its parsed form.
fn trace_headers(
    tracing: Option<&trace::CallTracing>,
    headers: &HeaderMap,
) -> (Option<HeaderValue>, Option<HeaderValue>) {
    match tracing {
        Some(tracing) => (None, tracing.span.context().trace_state.clone()),
        None => crate::infra::otel::ids::remote_parent(headers).map_or((None, None), |caller| {
            (Some(caller.traceparent()), caller.trace_state)
        }),
    }
}

/// Where a new stored object lives, for the calls that will name it.
fn pin_of(success: &Success, owner: Arc<str>) -> ResponsePin {
    ResponsePin {
        deployment: success.backend.deployment.name.clone(),
        model: success.model.clone(),
        owner,
    }
}

/// A stream tapped for its response id when it makes a new response.
fn tapped(
    store: &Arc<ResponsePins>,
    body: crate::upstream::BodyStream,
    pin: Option<ResponsePin>,
) -> crate::upstream::BodyStream {
    use futures_util::StreamExt;
    match pin {
        Some(pin) => pins::PinTap::new(body, store.clone(), pin).boxed(),
        None => body,
    }
}

/// The usage of a whole answer. Calls on a stored response produce nothing
/// new; endpoints whose answers may carry no usage are metered at 0.
fn outcome_of(endpoint: Endpoint, body: &[u8]) -> Outcome {
    match usage::parse(body) {
        _ if endpoint.makes_no_tokens() => Outcome::NoOutput,
        Some(usage) => Outcome::Reported(usage),
        None if endpoint.usage_optional() => Outcome::Reported(crate::vocab::Usage::default()),
        None => Outcome::Unknown,
    }
}

fn finish_failed(hooks: &UsageHooks, failure: &Failure) {
    hooks.finish(if failure.maybe_produced {
        Outcome::Unknown
    } else {
        Outcome::NoOutput
    });
}

/// Counts retries, fallbacks and token usage; cheap to clone into a stream.
#[derive(Clone)]
struct Observer {
    metrics: Metrics,
    pricing: Arc<Pricing>,
}

impl Observer {
    fn count(&self, success: &Success, requested: &Arc<str>) {
        self.count_retries(requested, success.attempts);
        if success.model != *requested {
            self.metrics
                .fallbacks
                .with_label_values(&[requested, &success.model])
                .inc();
        }
    }

    fn count_retries(&self, requested: &str, attempts: u32) {
        if attempts > 1 {
            self.metrics
                .retries
                .with_label_values(&[requested])
                .inc_by(u64::from(attempts - 1));
        }
    }

    /// Counts the call, names what served it to the usage observers, and
    /// records its tokens and cost once they are known.
    fn observe(&self, success: &Success, requested: &Arc<str>, hooks: &UsageHooks) {
        self.count(success, requested);
        // The call's span (see `server::call_span`): the request reader
        // recorded the model asked for; a fallback serves another.
        let span = tracing::Span::current();
        if success.model != *requested {
            span.record("served_model", &*success.model);
        }
        span.record("deployment", &*success.backend.deployment.name);
        hooks.served_by(Served {
            model: success.model.clone(),
            deployment: success.backend.deployment.name.clone(),
            price: self.pricing.price(&success.model).copied(),
        });
        hooks.add(Box::new(TokenMetrics(self.metrics.clone())));
    }
}

/// Tokens and cost of a finished call, by the model and deployment that served it.
struct TokenMetrics(Metrics);

impl UsageObserver for TokenMetrics {
    fn finish(self: Box<Self>, finished: &Finished<'_>) {
        if let (Outcome::Reported(usage), Some(served)) = (finished.outcome, finished.served) {
            self.0
                .record_usage(&served.model, &served.deployment, &usage, finished.cost_usd);
        }
    }
}

/// The model the client asked for (maybe virtual) and the one it was routed to.
#[derive(Clone)]
/// What the dispatcher tells of a call besides its attempts: the model
/// asked for and the one routed to, when the request was received (time to
/// first token counts from it), and whether streamed usage is hidden again.
struct Names {
    asked: Arc<str>,
    routed: Arc<str>,
    received: Instant,
    hide_usage: bool,
}

fn success_parts(success: Success, names: &Names) -> (ResponseParts, Reply) {
    let deployment = &success.backend.deployment;
    let mut headers = HeaderMap::with_capacity(success.headers.len() + 4);
    respond::copy_headers(&success.headers, &mut headers);
    headers.insert(DEPLOYMENT_HEADER, deployment.name_header.clone());
    headers.insert(ATTEMPTS_HEADER, HeaderValue::from(success.attempts));
    if let Some(hedge) = success.hedge {
        headers.insert(
            hedge::HEDGE_HEADER,
            HeaderValue::from_static(hedge.as_str()),
        );
    }
    if success.model != names.asked
        && let Ok(model) = HeaderValue::from_str(&success.model)
    {
        headers.insert("x-sluice-model", model);
    }
    if success.model != names.routed
        && let Ok(from) = HeaderValue::from_str(&names.routed)
    {
        headers.insert("x-sluice-fallback-from", from);
    }
    let parts = ResponseParts {
        status: success.status,
        headers,
        served_by: Some(ServedBy {
            model: success.model.clone(),
            deployment: deployment.name.clone(),
        }),
        upstream_time: Some(success.upstream_time),
        hedge: success.hedge,
    };
    (parts, success.body)
}

fn failure_response(failure: Failure) -> Response {
    let attempts = failure.attempts;
    let mut response = match failure.error {
        FailureKind::Upstream {
            backend,
            status,
            headers: upstream,
            body,
        } => {
            let mut headers = HeaderMap::with_capacity(upstream.len() + 3);
            respond::copy_headers(&upstream, &mut headers);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(DEPLOYMENT_HEADER, backend.deployment.name_header.clone());
            ResponseParts {
                status,
                headers,
                served_by: Some(ServedBy {
                    model: Arc::from(""),
                    deployment: backend.deployment.name.clone(),
                }),
                upstream_time: None,
                hedge: None,
            }
            .finish(Body::from(body))
        }
        FailureKind::Gateway(error) => error.into_response(),
    };
    if attempts > 0 {
        response
            .headers_mut()
            .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    }
    response
}

/// A failure as the `{"error": ...}` body of a final SSE event.
fn failure_body(failure: Failure) -> bytes::Bytes {
    match failure.error {
        FailureKind::Upstream { body, .. } => body,
        FailureKind::Gateway(error) => error.body(),
    }
}

struct ResponseParts {
    status: StatusCode,
    headers: HeaderMap,
    served_by: Option<ServedBy>,
    upstream_time: Option<Duration>,
    hedge: Option<Hedged>,
}

impl ResponseParts {
    fn finish(self, body: Body) -> Response {
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        if let Some(served_by) = self.served_by {
            response.extensions_mut().insert(served_by);
        }
        if let Some(upstream) = self.upstream_time {
            response.extensions_mut().insert(UpstreamTime(upstream));
        }
        if let Some(hedge) = self.hedge {
            response.extensions_mut().insert(hedge);
        }
        response
    }

    /// A streamed answer, carrying when and how it ended for the access log.
    fn relay(self, relay: relay::SseRelay) -> Response {
        let ended = relay.ended();
        let mut response = self.finish(Body::from_stream(relay));
        response.extensions_mut().insert(ended);
        response
    }
}
