//! The cache layer: after the request layer, before rate limits (a hit costs
//! no upstream quota).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use tracing::Instrument;

use crate::call::Call;
use crate::engines::cache::ResponseCache;
use crate::engines::cache::entry::{Entry, Recorded, Replay, complete_events, replay};
use crate::engines::cache::flight::{End, Flight};
use crate::engines::cache::key::{CacheKey, Decision, Eligibility, decide, semantic_parts};
use crate::engines::cache::semantic::Probe;
use crate::infra::sse;
use crate::infra::sse::usage::{self, StreamUsageScanner};
use crate::stages::{Next, Stage};
use crate::vocab::Endpoint;
use crate::vocab::error::{error_body, sse_error_event};
use crate::vocab::{CACHE_STATUS, ServedBy};

/// What the client asked for, to replay in the right shape.
#[derive(Clone, Copy)]
struct Want {
    endpoint: Endpoint,
    stream: bool,
    include_usage: bool,
}

/// Layer 7: answers from the cache, or joins an identical call in flight,
/// or records what the stages behind answer.
pub struct Cache(pub Arc<ResponseCache>);

impl Stage for Cache {
    fn call(&self, request: Request, next: impl Next) -> impl Future<Output = Response> + Send {
        cache(&self.0, request, next)
    }
}

/// A Messages call for a model an Anthropic deployment serves (or that
/// may fall back to another model, which one may serve) may be answered
/// in Anthropic's shape, relayed untranslated: the cache, which holds
/// OpenAI answers, neither serves nor keeps it.
fn relayable(request: &Request, route: &crate::engines::routing::ModelRoute) -> bool {
    request
        .extensions()
        .get::<crate::vocab::MessagesBody>()
        .is_some()
        && (!route.fallbacks.is_empty() || route.has_provider(crate::config::Provider::Anthropic))
}

async fn cache(cache: &Arc<ResponseCache>, request: Request, next: impl Next) -> Response {
    let Some((call, api)) = Call::proxied(request.extensions()) else {
        return next.run(request).await;
    };
    let identity = &call.identity;
    let started = tokio::time::Instant::now();
    let traced = |request: &Request, result| traced(request, started, result);
    let decision = if identity.cache && !relayable(&request, &api.route) {
        let eligibility = Eligibility {
            cache_all: cache.config.cache_all,
            model_override: cache.model_overrides.get(&*api.route.name).copied(),
        };
        decide(
            api.endpoint,
            api.view.json(),
            &cache.scope(identity, &api.route.name),
            &eligibility,
            request.headers(),
        )
    } else {
        Decision::Bypass
    };
    let Decision::Use { key, lookup } = decision else {
        cache
            .metrics
            .cache_requests
            .with_label_values(&["bypass"])
            .inc();
        traced(&request, "bypass");
        return labelled(next.run(request).await, "bypass");
    };
    let want = Want {
        endpoint: api.endpoint,
        stream: api.stream,
        include_usage: api.stream && api.include_usage,
    };
    let model = api.route.name.clone();
    let ttl = cache.ttl(request.headers());
    // Only the cache may answer a degraded call: stale entries and looser
    // semantic matches are better than a 503 then, never otherwise.
    let degraded = call.degraded.is_some();

    // The flight is claimed before the first await: identical requests that
    // arrive while this one looks up the store or the semantic index join it
    // instead of racing it to the upstream.
    let mut guard = match claim(cache, key, want.stream, lookup) {
        Claimed::Joined(flight) => {
            if let Some(response) = join(cache, flight, want, &model).await {
                traced(&request, "coalesced");
                return response;
            }
            // The leader failed: this request makes its own call, uncached.
            return labelled(next.run(request).await, "miss");
        }
        Claimed::Leads(guard) => guard,
    };
    if lookup {
        guard = match exact_hit(cache, guard, key, want, &model, degraded).await {
            Ok(response) => {
                traced(&request, "hit");
                return response;
            }
            Err(guard) => guard,
        };
    }
    let probe = if lookup {
        let request_id = request.headers().get(crate::util::headers::X_REQUEST_ID);
        embedded(cache, request.extensions(), request_id).await
    } else {
        None
    };
    if let (Some(semantic), Some(probe)) = (&cache.semantic, &probe)
        // Boxed, as the embedding above: only the semantic cache's calls
        // carry these futures.
        && let Some(similar) = Box::pin(semantic.nearest(probe, degraded)).await
        && let Ok(Some(entry)) = cache.store.get(similar).await
        && (entry.fresh() || degraded)
        && let Some(response) = answer(&entry, want, &model)
    {
        cache.record_hit("semantic_hit", &api.route.name, &entry);
        guard.served(entry);
        traced(&request, "semantic-hit");
        return labelled(response, "semantic-hit");
    }

    cache
        .metrics
        .cache_requests
        .with_label_values(&["miss"])
        .inc();
    guard.probe = probe;
    traced(&request, "miss");
    let response = next.run(request).await;
    labelled(record(cache, guard, response, want, ttl).await, "miss")
}

/// The call's semantic-cache probe: its prompt embedded (a call of its
/// own through the internal adapter), when the semantic cache is on and
/// the request has a prompt to embed.
async fn embedded(
    cache: &ResponseCache,
    extensions: &http::Extensions,
    request_id: Option<&HeaderValue>,
) -> Option<Probe> {
    let semantic = cache.semantic.as_ref()?;
    let (call, api) = Call::proxied(extensions)?;
    let scope = cache.scope(&call.identity, &api.route.name);
    let (partition, text) = semantic_parts(api.endpoint, api.view.json(), &scope)?;
    let trace = extensions.get::<crate::infra::otel::LiveSpan>();
    Box::pin(semantic.embed(&call.identity, (request_id, trace), partition, &text)).await
}

/// The cache's decision on the call's trace span, `started` being when
/// the stage began.
fn traced(request: &Request, started: tokio::time::Instant, result: &'static str) {
    super::trace_event(request, "sluice.cache", started, || {
        vec![("sluice.cache.result", result.into())]
    });
}

/// The answer from the store's entry for `key`, when it is fresh (or
/// stale, for a degraded call) and answerable in the shape the client
/// asked for; else the flight back, to go on with.
async fn exact_hit(
    cache: &Arc<ResponseCache>,
    guard: FlightGuard,
    key: CacheKey,
    want: Want,
    model: &Arc<str>,
    degraded: bool,
) -> Result<Response, FlightGuard> {
    let entry = match cache.store.get(key).await {
        Ok(Some(entry)) if entry.fresh() || degraded => entry,
        Ok(_) => return Err(guard),
        Err(error) => {
            cache.store_failed("lookup, treated as a miss", &error);
            return Err(guard);
        }
    };
    let Some(response) = answer(&entry, want, model) else {
        return Err(guard);
    };
    let fresh = entry.fresh();
    cache.record_hit(if fresh { "hit" } else { "stale_hit" }, model, &entry);
    guard.served(entry);
    Ok(if fresh {
        response
    } else {
        labelled(response, "stale")
    })
}

/// A miss answered by the stages behind: relayed as it comes while it is
/// recorded (a stream), or read whole and stored. A degraded answer (layer
/// 7a's static one) or an error is never stored.
async fn record(
    cache: &Arc<ResponseCache>,
    guard: FlightGuard,
    response: Response,
    want: Want,
    ttl: std::time::Duration,
) -> Response {
    if !response.status().is_success() || response.headers().contains_key(crate::vocab::DEGRADED) {
        drop(guard);
        return response;
    }
    let (parts, body) = response.into_parts();
    if want.stream {
        let tee = Tee {
            guard,
            recording: BytesMut::new(),
            limit: cache.config.max_entry_bytes,
            endpoint: want.endpoint,
            ttl,
            stale_for: cache.config.stale_for,
        };
        return Response::from_parts(parts, Body::from_stream(tee.run(body)));
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    if bytes.len() <= cache.config.max_entry_bytes
        && let Ok(text) = std::str::from_utf8(&bytes)
    {
        let entry = Entry::new(
            Recorded::Json {
                body: text.to_owned(),
            },
            ttl,
            cache.config.stale_for,
            usage::parse(&bytes),
        );
        guard.complete(entry);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Whether a request leads its key's flight or joins the one in flight.
enum Claimed {
    Leads(FlightGuard),
    Joined(Arc<Flight>),
}

/// Claims the key's flight synchronously (one DashMap entry lock): of
/// identical requests, exactly one leads. A request that skips the lookup
/// (`Cache-Control: no-cache`) never joins: it leads a fresh flight, which
/// later identical requests join.
fn claim(cache: &Arc<ResponseCache>, key: CacheKey, streaming: bool, lookup: bool) -> Claimed {
    let flight = match cache.flights.entry(key) {
        dashmap::Entry::Occupied(current) if lookup => {
            return Claimed::Joined(current.get().clone());
        }
        dashmap::Entry::Occupied(mut current) => {
            let flight = Arc::new(Flight::new(streaming));
            current.insert(flight.clone());
            flight
        }
        dashmap::Entry::Vacant(vacant) => vacant.insert(Arc::new(Flight::new(streaming))).clone(),
    };
    Claimed::Leads(FlightGuard {
        cache: cache.clone(),
        key,
        flight,
        probe: None,
        finished: false,
    })
}

/// Follows or waits for an identical call in flight. `None` if it failed.
async fn join(
    cache: &ResponseCache,
    flight: Arc<Flight>,
    want: Want,
    model: &Arc<str>,
) -> Option<Response> {
    // A streaming joiner follows the leader's stream once it has begun;
    // a leader answered from the cache (or failed) before its first chunk
    // is handled like a non-streaming one.
    if want.stream && flight.streaming && flight.first_chunk().await {
        cache
            .metrics
            .cache_requests
            .with_label_values(&["coalesced"])
            .inc();
        let mut response = sse_response(Body::from_stream(flight.follow()), model);
        response
            .headers_mut()
            .insert("x-sluice-coalesced", HeaderValue::from_static("true"));
        return Some(labelled(response, "hit"));
    }
    match flight.end().await {
        End::Complete(entry) => {
            cache
                .metrics
                .cache_requests
                .with_label_values(&["coalesced"])
                .inc();
            let mut response = answer(&entry, want, model)?;
            response
                .headers_mut()
                .insert("x-sluice-coalesced", HeaderValue::from_static("true"));
            Some(response)
        }
        End::Failed => None,
    }
}

/// A response from an entry, in the shape the client asked for.
fn answer(entry: &Entry, want: Want, model: &Arc<str>) -> Option<Response> {
    let mut response = match replay(entry, want.endpoint, want.stream, want.include_usage)? {
        Replay::Json(body) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Replay::Sse(events) => {
            let stream =
                futures_util::stream::iter(events.into_iter().map(Ok::<Bytes, std::io::Error>));
            sse_response(Body::from_stream(stream), model)
        }
    };
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(entry.age_secs()));
    response.extensions_mut().insert(ServedBy {
        model: model.clone(),
        deployment: Arc::from("cache"),
    });
    Some(labelled(response, "hit"))
}

fn sse_response(body: Body, model: &Arc<str>) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.extensions_mut().insert(ServedBy {
        model: model.clone(),
        deployment: Arc::from("cache"),
    });
    response
}

fn labelled(mut response: Response, result: &'static str) -> Response {
    response
        .headers_mut()
        .insert(CACHE_STATUS, HeaderValue::from_static(result));
    response
}

/// Owns a flight until it ends: stores and shares a complete answer, or marks
/// the flight failed (also when dropped early, e.g. the client went away).
struct FlightGuard {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    flight: Arc<Flight>,
    /// The request's embedding, indexed once its answer is stored.
    probe: Option<Probe>,
    finished: bool,
}

impl FlightGuard {
    /// The leader was answered from the cache: joiners get the same entry,
    /// and the flight ends now (the entry is already stored).
    fn served(mut self, entry: Arc<Entry>) {
        self.finished = true;
        self.flight.finish(End::Complete(entry));
        let flight = &self.flight;
        self.cache
            .flights
            .remove_if(&self.key, |_, current| Arc::ptr_eq(current, flight));
    }

    /// Shares the answer with joiners now and stores it off the request
    /// path. The finished flight stays findable until the entry is stored,
    /// so an identical request in between still gets the answer.
    fn complete(mut self, entry: Entry) {
        let entry = Arc::new(entry);
        self.finished = true;
        self.flight.finish(End::Complete(entry.clone()));
        let (cache, key, flight) = (self.cache.clone(), self.key, self.flight.clone());
        let probe = self.probe.take();
        let tasks = self.cache.tasks.clone();
        let store = async move {
            let expires =
                std::time::Instant::now() + std::time::Duration::from_millis(entry.ttl_ms);
            match cache.store.put(key, entry).await {
                Ok(()) => {
                    if let (Some(semantic), Some(probe)) = (&cache.semantic, probe) {
                        semantic.insert(probe, key, expires);
                    }
                }
                Err(error) => cache.store_failed("storing an entry", &error),
            }
            cache
                .flights
                .remove_if(&key, |_, current| Arc::ptr_eq(current, &flight));
            cache.record_size();
        };
        // A store failure's warning belongs to the call that stored.
        tasks.spawn(store.in_current_span());
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.flight.finish(End::Failed);
            let flight = &self.flight;
            self.cache
                .flights
                .remove_if(&self.key, |_, current| Arc::ptr_eq(current, flight));
        }
    }
}

/// Passes a streamed miss through unchanged while recording it.
struct Tee {
    guard: FlightGuard,
    recording: BytesMut,
    limit: usize,
    endpoint: Endpoint,
    ttl: std::time::Duration,
    stale_for: std::time::Duration,
}

impl Tee {
    fn run(self, body: Body) -> TeeStream {
        TeeStream {
            inner: body.into_data_stream(),
            tee: Some(self),
        }
    }

    /// Records a chunk and shares it with joiners; `false` once the answer
    /// outgrows `max_entry_bytes`, so neither the recording nor the flight's
    /// chunks grow past it. Joiners already following get an error event.
    fn record(&mut self, chunk: &Bytes) -> bool {
        if self.recording.len() + chunk.len() > self.limit {
            let mid_event = !self.recording.is_empty() && !sse::ends_event(&self.recording);
            let event = sse::as_own_event(too_large_to_share(), mid_event);
            self.guard.flight.push(event);
            return false;
        }
        self.guard.flight.push(chunk.clone());
        self.recording.extend_from_slice(chunk);
        true
    }

    /// The stream ended cleanly: keep it if it is complete.
    fn finish(self) {
        if let Some(events) = complete_events(&self.recording, self.endpoint) {
            let mut scanner = StreamUsageScanner::default();
            scanner.scan(&self.recording);
            let entry = Entry::new(
                Recorded::Sse { events },
                self.ttl,
                self.stale_for,
                scanner.usage(),
            );
            self.guard.complete(entry);
        }
    }
}

struct TeeStream {
    inner: axum::body::BodyDataStream,
    /// `None` once the stream ended or broke (the guard then fails the flight).
    tee: Option<Tee>,
}

impl futures_util::Stream for TeeStream {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(bytes))) => {
                if let Some(tee) = &mut self.tee
                    && !tee.record(bytes)
                {
                    // Too large to store or share: the stream goes on
                    // unrecorded, and the dropped guard fails the flight.
                    self.tee = None;
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => self.tee = None,
            std::task::Poll::Ready(None) => {
                if let Some(tee) = self.tee.take() {
                    tee.finish();
                }
            }
            std::task::Poll::Pending => {}
        }
        polled
    }
}

/// Ends the stream of a joiner whose leader's answer became too large to share.
fn too_large_to_share() -> Bytes {
    sse_error_event(&error_body(
        "The identical request this stream was following produced an answer larger than the cache's `max_entry_bytes`, which is not shared; retry the request.",
        "server_error",
        None,
        Some("cache_entry_too_large"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spelling::{self, Spelling};

    fn replayed(events: &[String], endpoint: Endpoint, include_usage: bool) -> Vec<u8> {
        let entry = Entry::new(
            Recorded::Sse {
                events: events.to_vec(),
            },
            std::time::Duration::from_secs(60),
            std::time::Duration::ZERO,
            None,
        );
        match replay(&entry, endpoint, true, include_usage) {
            Some(Replay::Sse(events)) => events.concat(),
            _ => panic!("no stream replay"),
        }
    }

    fn as_json(events: &[String]) -> serde_json::Value {
        let entry = Entry::new(
            Recorded::Sse {
                events: events.to_vec(),
            },
            std::time::Duration::from_secs(60),
            std::time::Duration::ZERO,
            None,
        );
        match replay(&entry, Endpoint::ChatCompletions, false, false) {
            Some(Replay::Json(body)) => serde_json::from_slice(&body).unwrap(),
            _ => panic!("no JSON replay"),
        }
    }

    /// Any legal spelling of a finished stream is recorded, and replays as
    /// the same events, with or without usage, and (chat) as the same JSON.
    #[test]
    fn every_spelling_is_recorded_and_replayed_as_the_same_events() {
        let mut rng = fastrand::Rng::with_seed(17);
        for round in 0..200 {
            let (endpoint, events) = match round % 2 {
                0 => (
                    Endpoint::ChatCompletions,
                    spelling::chat_stream(&mut rng, 3, 4),
                ),
                _ => (
                    Endpoint::Responses,
                    spelling::responses_stream(&mut rng, 3, 4),
                ),
            };
            let canonical = spelling::parse_stream(events.concat().as_bytes());
            let spelled = Spelling::random(&mut rng).stream(&events).concat();
            let recorded = complete_events(spelled.as_bytes(), endpoint)
                .unwrap_or_else(|| panic!("not recorded: {spelled:?}"));
            let shown = replayed(&recorded, endpoint, true);
            assert_eq!(spelling::parse_stream(&shown), canonical, "{spelled:?}");
            let hidden = replayed(&recorded, endpoint, false);
            assert_eq!(
                spelling::parse_stream(&hidden),
                spelling::without_usage(canonical),
                "{spelled:?}"
            );
            if endpoint == Endpoint::ChatCompletions {
                let plain = complete_events(events.concat().as_bytes(), endpoint).unwrap();
                assert_eq!(as_json(&recorded), as_json(&plain), "{spelled:?}");
            }
        }
    }

    #[test]
    fn unfinished_or_failed_streams_are_not_recorded_in_any_spelling() {
        let chat = Endpoint::ChatCompletions;
        assert!(complete_events(b"data:{\"choices\": []}\r\r", chat).is_none());
        assert!(complete_events(b"data: {\"a\":1}\r\n\r\ndata:[DONE]\r\n\r\n", chat).is_some());
        assert!(complete_events(b"data: {\"a\":1}\n\ndata: [DONE]", chat).is_some());
        let failed = b"data: {\"a\":1}\r\n\r\ndata:{\"error\": {\"message\": \"x\"}}\r\n\r\ndata: [DONE]\r\n\r\n";
        assert!(complete_events(failed, chat).is_none());
        let responses = Endpoint::Responses;
        let completed = b"event:response.completed\rdata:{\"type\": \"response.completed\"}\r\r";
        assert!(complete_events(completed, responses).is_some());
        let untyped = b"data: {\"type\": \"response.completed\", \"response\": {}}\n\n";
        assert!(complete_events(untyped, responses).is_some());
        let errored =
            b"event: error\ndata: {\"type\": \"error\"}\n\nevent: response.completed\ndata: {}\n\n";
        assert!(complete_events(errored, responses).is_none());
        assert!(complete_events(b"event: response.created\ndata: {}\n\n", responses).is_none());
    }
}
