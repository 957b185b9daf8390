//! The call's OpenTelemetry span, opened and closed by layer 4 (the access
//! log) around everything else: a server span that continues the caller's
//! trace (`traceparent`), named `{method} {route}` once the route is known,
//! with HTTP's attributes, who called and what served, and Sluice's own
//! under `sluice.*`. Inner layers find it as a request extension
//! (`LiveSpan`) and add what they learn (cache, limits, queue, attempts).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;

use crate::dispatch::ATTEMPTS_HEADER;
use crate::infra::otel::{Kind, Link, LiveSpan, SpanData, Tracer, ids};
use crate::util::headers::X_REQUEST_ID;
use crate::util::text::{clip, prefix};
use crate::vocab::error::ErrorLogged;
use crate::vocab::{CACHE_STATUS, DEGRADED, Identity, ServedBy, StreamOutcome};

/// Longest `user_agent.original` kept.
const MAX_USER_AGENT: usize = 256;

/// The call's span, put in the request's extensions; `None` when tracing
/// is off. The caller's `traceparent` is read here, by its grammar.
pub fn open(tracer: &Tracer, request: &mut Request) -> Option<LiveSpan> {
    if !tracer.is_on() {
        return None;
    }
    let remote = ids::remote_parent(request.headers());
    let span = tracer.root(request.method().to_string(), Kind::Server, remote)?;
    span.record(|data| {
        request_attrs(data, request);
        if let Some(scheme) = request.uri().scheme_str() {
            data.set("url.scheme", scheme.to_owned());
        }
        if let Some(agent) = request.headers().get(http::header::USER_AGENT) {
            let agent = String::from_utf8_lossy(agent.as_bytes());
            data.set(
                "user_agent.original",
                prefix(&agent, MAX_USER_AGENT).to_owned(),
            );
        }
    });
    request.extensions_mut().insert(span.clone());
    Some(span)
}

/// The span of a call Sluice makes itself (the internal adapter): a child
/// of the call that asked for it (a semantic-cache embedding brings its
/// caller's span along), else a new trace's root linked to the call that
/// queued the work (a batch line or an asynchronous job sends that call's
/// `traceparent`, which is removed here: the upstream must not see a
/// context hours old). Named after the kind of work and its path.
pub fn open_internal(tracer: &Tracer, request: &mut Request) -> Option<LiveSpan> {
    let cause = ids::remote_parent(request.headers());
    for name in ["traceparent", "tracestate"] {
        request.headers_mut().remove(name);
    }
    let parent = request.extensions_mut().remove::<LiveSpan>();
    if !tracer.is_on() {
        return None;
    }
    let tag = request
        .headers()
        .get(crate::util::headers::X_SLUICE_TAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (work, batch) = internal_work(&tag);
    let name = format!("{work} {}", clip(request.uri().path()));
    let span = match parent {
        Some(parent) => parent.child(name, Kind::Internal),
        None => tracer.root(name, Kind::Internal, None)?,
    };
    span.record(|data| {
        data.set("sluice.internal", work);
        request_attrs(data, request);
        if let Some(batch) = batch {
            data.set("sluice.batch.id", batch.to_owned());
        }
        if let Some(cause) = cause {
            data.links.push(Link { context: cause });
        }
    });
    request.extensions_mut().insert(span.clone());
    Some(span)
}

/// What every call's span says of its request: method, path, request id.
fn request_attrs(data: &mut SpanData, request: &Request) {
    data.set("http.request.method", request.method().to_string());
    data.set("url.path", clip(request.uri().path()).into_owned());
    let id = request.headers().get(X_REQUEST_ID);
    if let Some(id) = id.and_then(|v| v.to_str().ok()) {
        data.set("sluice.request_id", id.to_owned());
    }
}

/// The kind of internal work a tag names, and a batch line's batch id.
fn internal_work(tag: &str) -> (&'static str, Option<&str>) {
    use crate::engines::internal::{ASYNC_TAG, BATCH_TAG, SEMANTIC_CACHE_TAG};
    if let Some(batch) = tag
        .strip_prefix(BATCH_TAG)
        .and_then(|rest| rest.strip_prefix(':'))
    {
        ("batch_line", Some(batch))
    } else if tag == ASYNC_TAG {
        ("async_job", None)
    } else if tag == SEMANTIC_CACHE_TAG {
        ("semantic_cache_embedding", None)
    } else {
        ("internal", None)
    }
}

/// What the response head tells: route, status, caller, what served it.
pub fn on_response(span: &LiveSpan, response: &Response) {
    span.record(|data| {
        let extensions = response.extensions();
        let status = response.status().as_u16();
        if let Some(route) = extensions.get::<MatchedPath>() {
            // A server span opened under the method alone: the route is
            // known now.
            if data.kind == Kind::Server {
                data.name = format!("{} {}", data.name, route.as_str()).into();
            }
            data.set("http.route", route.as_str().to_owned());
        }
        data.set("http.response.status_code", i64::from(status));
        if status >= 500 {
            data.set("error.type", status.to_string());
            data.error = Some(
                extensions
                    .get::<ErrorLogged>()
                    .map(|e| e.0.clone())
                    .unwrap_or_default(),
            );
        }
        if let Some(identity) = extensions.get::<Arc<Identity>>() {
            data.set("sluice.key.id", &identity.id);
            data.set("sluice.key.name", &identity.name);
            if let Some(org) = &identity.org {
                data.set("sluice.org", org);
            }
        }
        if let Some(served) = extensions.get::<ServedBy>() {
            data.set("sluice.deployment", &served.deployment);
            if !served.model.is_empty() {
                data.set("sluice.model", &served.model);
            }
        }
        let headers = response.headers();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(cache) = text(CACHE_STATUS.as_str()) {
            data.set("sluice.cache", cache.to_owned());
        }
        if let Some(attempts) = text(ATTEMPTS_HEADER).and_then(|a| a.parse::<i64>().ok()) {
            data.set("sluice.attempts", attempts);
        }
        if let Some(degraded) = text(DEGRADED) {
            data.set("sluice.degraded", degraded.to_owned());
        }
    });
}

/// Ends the span with a stream's outcome, if it was one.
pub fn close(span: &LiveSpan, outcome: Option<StreamOutcome>) {
    if let Some(outcome) = outcome {
        span.record(|data| {
            data.set("sluice.stream.outcome", outcome.as_str());
            if outcome.is_error() {
                data.set("error.type", outcome.as_str());
                data.error.get_or_insert_with(String::new);
            }
        });
    }
    span.end();
}
