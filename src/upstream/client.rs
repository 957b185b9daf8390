//! The pooled HTTP client shared by all deployments, and the one send path.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderValue, header};
use http_body_util::{BodyDataStream, Full};

use super::{Deployment, UpstreamError, UpstreamRequest, UpstreamResponse, multipart};
use crate::infra::http_pool::PooledClient;
use crate::infra::workers::PerWorker;
use crate::util::text::root_cause;

#[derive(Clone)]
pub struct UpstreamClient {
    /// Files and Batch API forwarding, health probes.
    pub(super) http: reqwest::Client,
    /// Model calls (`send`): a pool per worker thread.
    model: Arc<PerWorker<PooledClient>>,
}

impl UpstreamClient {
    /// `pools`: one per worker thread (`ServerConfig::upstream_pools`).
    pub fn new(pools: usize) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(512)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the upstream HTTP client: {e}"))?;
        let model = Arc::new(crate::infra::http_pool::pooled_clients(pools)?);
        Ok(Self { http, model })
    }

    /// Sends the request and returns once the response headers have arrived.
    /// The caller bounds this with the deployment's timeout; dropping the
    /// returned body (or this future) closes the upstream connection.
    pub async fn send(
        &self,
        deployment: &Deployment,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if let Some(local) = &deployment.local {
            return Ok(local.answer(request).await);
        }
        let upstream_model = deployment.upstream_model(&request.client_model);
        let anthropic = deployment.provider == crate::config::Provider::Anthropic;
        let Outgoing {
            body,
            include_usage,
            relay,
        } = match outgoing(deployment, &request, upstream_model)? {
            Ok(outgoing) => outgoing,
            Err(refusal) => return Ok(refusal),
        };
        let uri = deployment
            .uri(request.endpoint, upstream_model, request.stored.as_ref())
            .map_err(UpstreamError::Request)?;
        let method = request
            .stored
            .as_ref()
            .map_or(http::Method::POST, |call| call.method.clone());
        let mut builder = http::Request::builder().method(method.clone()).uri(uri);
        let body = if method != http::Method::GET && method != http::Method::DELETE {
            let content_type = request
                .content_type
                .unwrap_or(HeaderValue::from_static("application/json"));
            builder = builder.header(header::CONTENT_TYPE, content_type);
            body
        } else {
            Bytes::new()
        };
        if let Some((name, value)) = &deployment.auth {
            builder = builder.header(name, value);
        }
        if anthropic {
            let (name, value) = super::anthropic::VERSION_HEADER;
            builder = builder.header(name, value);
            let beta = request.messages.as_ref().and_then(|m| m.beta.clone());
            if let Some(beta) = beta.filter(|_| relay) {
                builder = builder.header("anthropic-beta", beta);
            }
        }
        if let Some(id) = request.request_id {
            builder = builder.header(crate::util::headers::X_REQUEST_ID, id);
        }
        if let Some(beta) = request.openai_beta {
            builder = builder.header("openai-beta", beta);
        }
        if let Some(parent) = request.traceparent {
            builder = builder.header("traceparent", parent);
            if let Some(state) = request.tracestate {
                builder = builder.header("tracestate", state);
            }
        }
        let outgoing = builder
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        let response = self.model.get().request(outgoing).await.map_err(classify)?;
        let (head, incoming) = response.into_parts();
        let body = BodyDataStream::new(incoming)
            .map_err(|e| UpstreamError::Body(root_cause(&e)))
            .boxed();
        let response = UpstreamResponse {
            status: head.status,
            headers: head.headers,
            body,
        };
        match (anthropic, relay) {
            (true, true) => Ok(super::anthropic::relayed(response)),
            (true, false) => Ok(super::anthropic::answer(response, include_usage).await),
            (false, _) => Ok(response),
        }
    }
}

/// What one call sends, as the deployment takes it.
struct Outgoing {
    body: Bytes,
    /// A chat call translated to Messages asked for the stream's usage chunk.
    include_usage: bool,
    /// A Messages call sent as it came to an Anthropic deployment: its
    /// answer goes back untranslated.
    relay: bool,
}

/// The body a deployment is sent: the client's bytes (with the model
/// renamed when `model_map` renames it); a chat call written as Messages
/// for an Anthropic deployment, or a Messages call's own bytes; or the
/// refusal that answers a call the deployment cannot take.
fn outgoing(
    deployment: &Deployment,
    request: &UpstreamRequest,
    upstream_model: &str,
) -> Result<Result<Outgoing, UpstreamResponse>, UpstreamError> {
    let renamed = upstream_model != &*request.body_model && request.stored.is_none();
    let plain = |body: Bytes, relay| Outgoing {
        body,
        include_usage: false,
        relay,
    };
    match (deployment.provider, &request.messages) {
        (crate::config::Provider::Anthropic, Some(messages)) => {
            let rename = renamed.then_some(upstream_model);
            let body = relayed_body(&messages.body, &request.body, rename)?;
            Ok(Ok(plain(body, true)))
        }
        (crate::config::Provider::Anthropic, None) => {
            Ok(
                super::anthropic::request_body(request.endpoint, &request.body, upstream_model)
                    .map(|(body, include_usage)| Outgoing {
                        body,
                        include_usage,
                        relay: false,
                    }),
            )
        }
        (
            _,
            Some(crate::vocab::MessagesBody {
                untranslatable: Some(why),
                ..
            }),
        ) => Ok(Err(super::anthropic::untranslatable(why))),
        _ if renamed && deployment.target.model_in_body(request.endpoint) => {
            let body = rewrite_model(&request.body, request.content_type.as_ref(), upstream_model)?;
            Ok(Ok(plain(body, false)))
        }
        _ => Ok(Ok(plain(request.body.clone(), false))),
    }
}

impl UpstreamClient {
    /// An active health probe: `true` when the deployment answers 2xx.
    pub async fn probe(&self, deployment: &Deployment, timeout: std::time::Duration) -> bool {
        let Some(url) = deployment.target.probe_url() else {
            return true;
        };
        let mut request = self.http.get(url).timeout(timeout);
        if let Some((name, value)) = &deployment.auth {
            request = request.header(name, value);
        }
        if deployment.provider == crate::config::Provider::Anthropic {
            let (name, value) = super::anthropic::VERSION_HEADER;
            request = request.header(name, value);
        }
        matches!(request.send().await, Ok(response) if response.status().is_success())
    }
}

fn classify(error: hyper_util::client::legacy::Error) -> UpstreamError {
    if error.is_connect() {
        UpstreamError::Connect(root_cause(&error))
    } else {
        UpstreamError::Request(root_cause(&error))
    }
}

/// The output cap a body asks for.
#[derive(serde::Deserialize)]
struct Cap {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

fn cap_of(body: &[u8]) -> Option<u64> {
    let cap: Cap = serde_json::from_slice(body).ok()?;
    cap.max_completion_tokens.or(cap.max_tokens)
}

/// A Messages call's own bytes as relayed: as they came, unless `model_map`
/// renames the model (`rename`) or a stage lowered the output cap in its
/// chat view (a key's `max_output_tokens`, a degraded model's clamp),
/// which the relayed call keeps too.
fn relayed_body(
    messages: &Bytes,
    chat: &Bytes,
    rename: Option<&str>,
) -> Result<Bytes, UpstreamError> {
    let lowered = cap_of(chat).filter(|cap| cap_of(messages).is_some_and(|asked| *cap < asked));
    if rename.is_none() && lowered.is_none() {
        return Ok(messages.clone());
    }
    with_fields(messages, |object| {
        if let Some(model) = rename {
            object.insert("model".to_owned(), model.into());
        }
        if let Some(cap) = lowered {
            object.insert("max_tokens".to_owned(), cap.into());
        }
    })
}

/// A JSON object body written again with `set`'s fields.
fn with_fields(
    body: &[u8],
    set: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<Bytes, UpstreamError> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| UpstreamError::Rewrite(e.to_string()))?;
    set(&mut object);
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Rewrite(e.to_string()))
}

/// Replaces the body's `model` with the upstream's name for it. Only runs
/// when `model_map` renames the model (or an Azure path named it and the
/// body did not); otherwise the client's bytes go as-is. A multipart upload
/// gets the new name spliced into its `model` field.
fn rewrite_model(
    body: &Bytes,
    content_type: Option<&HeaderValue>,
    upstream_model: &str,
) -> Result<Bytes, UpstreamError> {
    if let Some(boundary) = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(multipart::boundary)
    {
        return multipart::with_field(body, boundary, "model", upstream_model)
            .map(Bytes::from)
            .ok_or_else(|| UpstreamError::Rewrite("the form is not well-formed".into()));
    }
    with_fields(body, |object| {
        object.insert("model".to_owned(), upstream_model.into());
    })
}
