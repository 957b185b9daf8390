//! Layer 5b: a proxied POST that asks to be answered later is read, checked
//! and recorded here, and answered `202` at once; the runner replays it
//! through the internal adapter. Every other call passes after a header
//! lookup.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::Map;

use crate::call::Call;
use crate::engines::jobs::asynchronous::ask::{self, wants_async};
use crate::engines::jobs::asynchronous::record::{self, CALLBACK_PENDING, Job, Status};
use crate::engines::jobs::{Jobs, JobsError, new_id, unix_now};
use crate::engines::request::parse;
use crate::engines::request::paths::{ApiCall, classify};
use crate::infra::otel::LiveSpan;
use crate::stages::{Next, Stage};
use crate::vocab::Identity;
use crate::vocab::error::GatewayError;

/// The client headers a job replays: what shapes the call, never its
/// credentials (the runner acts as the key by its stable id).
const REPLAYED: [&str; 3] = ["content-type", "x-sluice-priority", "x-request-id"];

pub struct AsyncIntake {
    pub jobs: Arc<Jobs>,
    /// `[server] max_body_bytes` and `body_read_timeout`, as for any call.
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
}

impl Stage for AsyncIntake {
    async fn call(&self, request: Request, next: impl Next) -> Response {
        if request.method() != http::Method::POST || !wants_async(request.headers()) {
            return next.run(request).await;
        }
        let path_model = match classify(request.method(), request.uri().path()) {
            Some(ApiCall::Proxy { path_model, .. }) => path_model.map(str::to_owned),
            _ => return next.run(request).await,
        };
        let callback = match self.check(request.headers()) {
            Ok(callback) => callback,
            Err(refusal) => {
                return crate::util::drain::refuse_after_drain(request, refusal.into_response())
                    .await;
            }
        };
        // Boxed: recording a job is a 6 KB future that a call passing
        // through would otherwise carry in its own.
        match Box::pin(self.accept(request, path_model.as_deref(), callback)).await {
            Ok(job) => accepted(&job, Asked::Yes),
            Err(refusal) => refusal,
        }
    }
}

impl AsyncIntake {
    /// 429 when the key already has `max_queued_per_key` jobs open.
    async fn check_backlog(&self, key_id: &str) -> Result<(), Response> {
        let open = record::open_jobs(&self.jobs.db, key_id)
            .await
            .map_err(IntoResponse::into_response)?;
        let limit = self.jobs.async_requests.max_queued_per_key;
        if open < limit as i64 {
            return Ok(());
        }
        let message = format!(
            "This key has {limit} asynchronous requests waiting or running; wait for some to finish."
        );
        let body = crate::vocab::error::error_body(
            &message,
            "requests",
            None,
            Some("too_many_async_requests"),
        );
        let mut response = crate::vocab::error::json_response(StatusCode::TOO_MANY_REQUESTS, body);
        crate::vocab::error::set_retry_after(response.headers_mut(), Duration::from_secs(1));
        Err(response)
    }

    /// What can be refused before the body is read: its type, and the
    /// callback URL (returned when allowed).
    fn check(&self, headers: &HeaderMap) -> Result<Option<String>, JobsError> {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(parse::is_json);
        if !json {
            return Err(JobsError::invalid(
                "Asynchronous requests take JSON bodies.",
                None,
            ));
        }
        ask::callback(headers, &self.jobs.async_requests.callback_hosts)
    }

    /// Reads, checks and records the call; the refusal is an answer.
    async fn accept(
        &self,
        request: Request,
        path_model: Option<&str>,
        callback: Option<String>,
    ) -> Result<Job, Response> {
        let (parts, body) = request.into_parts();
        let identity = parts
            .extensions
            .get::<Call>()
            .map(|call| call.identity.clone())
            .ok_or_else(|| GatewayError::Internal.into_response())?;
        let read = parse::read_body(&parts.headers, body, self.max_body_bytes);
        let body = tokio::time::timeout(self.body_read_timeout, read)
            .await
            .map_err(|_| GatewayError::BodyTimeout(self.body_read_timeout))
            .and_then(|read| read)
            .map_err(IntoResponse::into_response)?;
        let head = parse::parse_head(&body, path_model).map_err(IntoResponse::into_response)?;
        if head.stream {
            return Err(refuse(
                "A streamed answer cannot be kept for later; drop `stream` or the async request.",
                Some("stream"),
            ));
        }
        if !identity.may_use(&head.model) {
            let refusal = GatewayError::ModelNotAllowed {
                model: head.model.as_ref().into(),
                key: identity.name.to_string(),
            };
            return Err(refusal.into_response());
        }
        let body = String::from_utf8(body.to_vec())
            .map_err(|_| refuse("The request body is not UTF-8.", None))?;
        let trace = parts.extensions.get::<LiveSpan>();
        self.record(&identity, &parts.uri, &parts.headers, body, callback, trace)
            .await
    }

    /// A call already read (layer 6) that degradation level 4 would refuse
    /// but whose key may queue (`queue_in_maintenance`): recorded exactly
    /// like a `Prefer: respond-async` call and answered 202; the runner
    /// holds it until the model is out of maintenance.
    pub async fn accept_read(
        &self,
        identity: &Identity,
        (uri, headers): (&Uri, &HeaderMap),
        body: &[u8],
        trace: Option<&LiveSpan>,
    ) -> Response {
        let callback = match self.check(headers) {
            Ok(callback) => callback,
            Err(refusal) => return refusal.into_response(),
        };
        let Ok(body) = std::str::from_utf8(body) else {
            return refuse("The request body is not UTF-8.", None);
        };
        match self
            .record(identity, uri, headers, body.to_owned(), callback, trace)
            .await
        {
            // The client did not ask (a `Prefer` is taken at layer 5b).
            Ok(job) => accepted(&job, Asked::No),
            Err(refusal) => refusal,
        }
    }

    /// Stores the job (within the key's backlog) and wakes the runner.
    /// `trace` is the submitting call's span: the job's span links to it.
    async fn record(
        &self,
        identity: &Identity,
        uri: &Uri,
        headers: &HeaderMap,
        body: String,
        callback: Option<String>,
        trace: Option<&LiveSpan>,
    ) -> Result<Job, Response> {
        self.check_backlog(&identity.id).await?;
        let now = unix_now();
        let keep =
            i64::try_from(self.jobs.async_requests.expire_after.as_secs()).unwrap_or(i64::MAX);
        let job = Job {
            id: new_id("async_"),
            owner: identity.id.to_string(),
            status: Status::Queued,
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |path| path.as_str().to_owned()),
            headers: replayed(headers, trace),
            body,
            callback_state: callback.as_ref().map(|_| CALLBACK_PENDING.to_owned()),
            callback,
            answer: None,
            created_at: now,
            completed_at: None,
            expires_at: now.saturating_add(keep),
        };
        record::insert(&self.jobs.db, &job)
            .await
            .map_err(IntoResponse::into_response)?;
        self.jobs.async_wake.notify_one();
        self.jobs
            .metrics
            .async_jobs
            .with_label_values(&["accepted"])
            .inc();
        Ok(job)
    }
}

/// The replayed headers as a JSON object (`REPLAYED`, when text), and
/// the submitting call's `traceparent` when Sluice traced it (the internal
/// adapter turns it into a link).
fn replayed(headers: &HeaderMap, trace: Option<&LiveSpan>) -> String {
    let mut kept: Map<String, serde_json::Value> = REPLAYED
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.into()))
        })
        .collect();
    if let Some(span) = trace {
        let parent = span.context().traceparent_text();
        kept.insert("traceparent".to_owned(), parent.into());
    }
    serde_json::Value::Object(kept).to_string()
}

fn refuse(message: &str, param: Option<&'static str>) -> Response {
    JobsError::invalid(message, param).into_response()
}

/// Whether the client asked for an asynchronous answer (`Prefer:
/// respond-async` or `x-sluice-async`), or maintenance made it one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asked {
    Yes,
    No,
}

/// `202 Accepted`, the job, and where to poll for it; `Preference-Applied`
/// only when the client asked (RFC 7240).
fn accepted(job: &Job, asked: Asked) -> Response {
    let body = serde_json::to_vec(&job.to_json()).unwrap_or_default();
    let mut response = crate::vocab::error::json_response(StatusCode::ACCEPTED, body.into());
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&job.url()) {
        headers.insert(header::LOCATION, location);
    }
    if asked == Asked::Yes {
        headers.insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
    }
    response
}
