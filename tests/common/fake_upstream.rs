//! A fake OpenAI/Azure upstream on a real socket. Every request is recorded;
//! the next response follows the queued `Behavior`s, else the default.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::spelling::Spelling;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body parsed (`Null` when it is not JSON the parser takes).
    pub body: Value,
    /// The body as received.
    pub raw: Bytes,
}

#[derive(Clone)]
pub enum Behavior {
    /// A chat completion echoing the requested model (the default).
    Echo,
    /// Any status, headers and body.
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// SSE events, `interval` apart. With `gate`, the stream stops after the
    /// first event until the gate is opened.
    Stream {
        events: Vec<String>,
        interval: Duration,
        gate: Option<Arc<Notify>>,
    },
    /// SSE bytes cut anywhere (even inside a UTF-8 character), `interval`
    /// apart: what `Behavior::spelled` sends.
    StreamBytes {
        pieces: Vec<Bytes>,
        interval: Duration,
    },
    /// Waits before sending the response head, then echoes.
    DelayHead(Duration),
    /// Waits before sending the response head, then echoes; a request with
    /// `stream: true` gets its answer as SSE chunks ending in `[DONE]`.
    Paced(Duration),
    /// Waits before sending the response head, then behaves as the inner one.
    Late(Duration, Box<Behavior>),
    /// Sends `events`, then breaks the connection mid-body.
    BreakAfter(Vec<String>),
    /// Endless SSE stream; `FakeUpstream::stream_dropped` reports when the
    /// gateway stops reading it.
    Endless,
    /// Drops the connection without a response.
    Reset,
    /// Each call fails with probability `rate`: a 429 (with a short hint), a
    /// 500, a hang past any timeout, or a reset, equally likely; otherwise it
    /// echoes. Seeded, so runs are repeatable.
    Chaos { rate: f64 },
    /// A 500 with probability `rate`, else an echo. Seeded.
    Flaky { rate: f64 },
    /// `status` and a JSON-looking body of `bytes` bytes in 64 KiB chunks,
    /// with no `content-length` (so only counting can catch it).
    /// `FakeUpstream::wait_stream_dropped` reports when the gateway stops
    /// reading it.
    Huge { status: u16, bytes: usize },
    /// `status` at once, then a body of one byte every `interval`, for ever.
    Drip { status: u16, interval: Duration },
    /// An SSE answer whose first line never ends: `bytes` of content in 16 KiB
    /// chunks without a newline, then (once `gate` is opened, if given) the
    /// line's end and `[DONE]`.
    EndlessLine {
        bytes: usize,
        gate: Option<Arc<Notify>>,
    },
}

impl Behavior {
    /// A 500 with an OpenAI-shaped `server_error` body.
    pub fn server_error() -> Self {
        Self::Reply {
            status: 500,
            headers: vec![],
            body: r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#
                .into(),
        }
    }
}

impl Behavior {
    /// `events` (canonical, as OpenAI writes them) in `spelling`, the bytes
    /// cut at random places (seeded by `seed`: inside lines, between `\r`
    /// and `\n`) and sent a millisecond apart, so each cut reaches the
    /// gateway as its own read.
    pub fn spelled(events: &[String], spelling: Spelling, seed: u64) -> Self {
        let bytes = spelling.stream(events).concat();
        let mut rng = fastrand::Rng::with_seed(seed);
        let pieces = super::spelling::cut(&mut rng, bytes.as_bytes(), 24);
        Self::StreamBytes {
            pieces: pieces.into_iter().map(Bytes::from).collect(),
            interval: Duration::from_millis(1),
        }
    }

    /// A `status` redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::Reply {
            status,
            headers: vec![("location", location.to_owned())],
            body: String::new(),
        }
    }
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<Shared>,
}

struct Shared {
    name: String,
    recorded: Mutex<Vec<Recorded>>,
    queue: Mutex<VecDeque<Behavior>>,
    default: Mutex<Behavior>,
    calls: AtomicUsize,
    rng: Mutex<fastrand::Rng>,
    stream_dropped: AtomicBool,
    dropped_notify: Notify,
}

impl FakeUpstream {
    pub async fn start(name: &str) -> Self {
        let state = Arc::new(Shared {
            name: name.to_owned(),
            recorded: Mutex::new(Vec::new()),
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Behavior::Echo),
            calls: AtomicUsize::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(name.bytes().map(u64::from).sum())),
            stream_dropped: AtomicBool::new(false),
            dropped_notify: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, behavior: Behavior) {
        self.state.queue.lock().unwrap().push_back(behavior);
    }

    /// Queues a stream that sends its head, then holds its events until the
    /// returned gate is notified.
    pub fn push_gated_stream(&self, events: Vec<String>) -> Arc<Notify> {
        let gate = Arc::new(Notify::new());
        self.push(Behavior::Stream {
            events,
            interval: Duration::ZERO,
            gate: Some(gate.clone()),
        });
        gate
    }

    pub fn set_default(&self, behavior: Behavior) {
        *self.state.default.lock().unwrap() = behavior;
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.recorded()
            .pop()
            .expect("the upstream received no request")
    }

    /// Waits (bounded) until an `Endless` stream was dropped by the gateway.
    pub async fn wait_stream_dropped(&self, within: Duration) -> bool {
        let wait = async {
            while !self.state.stream_dropped.load(Ordering::SeqCst) {
                self.state.dropped_notify.notified().await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }
}

async fn handle(State(state): State<Arc<Shared>>, request: Request) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.recorded.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
        raw: bytes.clone(),
    });
    let mut behavior = state
        .queue
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.default.lock().unwrap().clone());
    if let Behavior::Late(delay, inner) = behavior {
        tokio::time::sleep(delay).await;
        behavior = *inner;
    }
    if let Behavior::Flaky { rate } = behavior {
        let fail = state.rng.lock().unwrap().f64() < rate;
        behavior = if fail {
            Behavior::server_error()
        } else {
            Behavior::Echo
        };
    }
    if let Behavior::Chaos { rate } = behavior {
        let mut rng = state.rng.lock().unwrap();
        behavior = if rng.f64() >= rate {
            Behavior::Echo
        } else {
            match rng.u8(0..4) {
                0 => Behavior::Reply {
                    status: 429,
                    headers: vec![("retry-after-ms", "100".into())],
                    body: r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
                },
                1 => Behavior::server_error(),
                2 => Behavior::DelayHead(Duration::from_secs(30)),
                _ => Behavior::Reset,
            }
        };
    }
    match behavior {
        Behavior::Chaos { .. } | Behavior::Flaky { .. } | Behavior::Late(..) => {
            unreachable!("resolved above")
        }
        Behavior::Reset => sse(futures_util::stream::once(async {
            Err::<Bytes, _>(std::io::Error::other("injected reset"))
        })
        .boxed()),
        Behavior::Echo => echo(&state.name, &body),
        Behavior::Reply {
            status,
            headers,
            body,
        } => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Behavior::DelayHead(delay) => {
            tokio::time::sleep(delay).await;
            echo(&state.name, &body)
        }
        Behavior::Paced(delay) => {
            tokio::time::sleep(delay).await;
            if body["stream"] == json!(true) {
                let events = [chunk("from "), chunk(&state.name), done()];
                sse(futures_util::stream::iter(
                    events.map(|event| Ok::<_, std::io::Error>(Bytes::from(event))),
                )
                .boxed())
            } else {
                echo(&state.name, &body)
            }
        }
        Behavior::Stream {
            events,
            interval,
            gate,
        } => sse(futures_util::stream::iter(events.into_iter().enumerate())
            .then(move |(index, event)| {
                let gate = gate.clone();
                async move {
                    if index == 1
                        && let Some(gate) = gate
                    {
                        gate.notified().await;
                    }
                    if index > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    Ok::<_, std::io::Error>(Bytes::from(event))
                }
            })
            .boxed()),
        Behavior::StreamBytes { pieces, interval } => sse(futures_util::stream::iter(pieces)
            .then(move |piece| async move {
                tokio::time::sleep(interval).await;
                Ok::<_, std::io::Error>(piece)
            })
            .boxed()),
        Behavior::BreakAfter(events) => {
            let items: Vec<Option<Bytes>> = events
                .into_iter()
                .map(|e| Some(Bytes::from(e)))
                .chain(std::iter::once(None))
                .collect();
            // The pause lets the events reach the socket before the break.
            let stream = futures_util::stream::iter(items).then(|item| async move {
                match item {
                    Some(event) => Ok(event),
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(std::io::Error::other("injected break"))
                    }
                }
            });
            sse(stream.boxed())
        }
        Behavior::Huge { status, bytes } => {
            let guard = DropGuard(state.clone());
            let piece = Bytes::from(vec![b'7'; 64 * 1024]);
            let pieces = bytes.div_ceil(piece.len());
            let stream = futures_util::stream::iter(0..pieces).map(move |_| {
                let _owned = &guard;
                Ok::<_, std::io::Error>(piece.clone())
            });
            with_status(status, "application/json", Body::from_stream(stream))
        }
        Behavior::Drip { status, interval } => {
            let stream = futures_util::stream::unfold((), move |()| async move {
                tokio::time::sleep(interval).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
            });
            with_status(status, "application/json", Body::from_stream(stream))
        }
        Behavior::EndlessLine { bytes, gate } => {
            let piece = Bytes::from(vec![b'a'; 16 * 1024]);
            let line = futures_util::stream::iter(0..bytes.div_ceil(piece.len()))
                .map(move |_| piece.clone());
            let end = futures_util::stream::once(async move {
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                Bytes::from_static(b"\"}}]}\n\ndata: [DONE]\n\n")
            });
            let start = futures_util::stream::once(async {
                Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"")
            });
            sse(start.chain(line).chain(end).map(Ok).boxed())
        }
        Behavior::Endless => {
            let guard = DropGuard(state.clone());
            let stream = futures_util::stream::unfold((0u64, guard), |(n, guard)| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let event = Bytes::from(format!("data: {{\"n\":{n}}}\n\n"));
                Some((Ok::<_, std::io::Error>(event), (n + 1, guard)))
            });
            sse(stream.boxed())
        }
    }
}

struct DropGuard(Arc<Shared>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.stream_dropped.store(true, Ordering::SeqCst);
        self.0.dropped_notify.notify_waiters();
    }
}

fn sse(
    stream: futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
) -> Response {
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

fn with_status(status: u16, content_type: &str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    response
}

fn echo(name: &str, body: &Value) -> Response {
    let model = body["model"].as_str().unwrap_or("unknown");
    let reply = json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {name}")},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 3}}
    });
    let mut response = Response::new(Body::from(reply.to_string()));
    let headers = response.headers_mut();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("x-upstream-name", name.parse().unwrap());
    headers.insert(
        "openai-organization",
        "org-secret-upstream".parse().unwrap(),
    );
    headers.insert("set-cookie", "__cf_bm=abc".parse().unwrap());
    response
}

/// A chat.completion.chunk SSE event with `content`.
pub fn chunk(content: &str) -> String {
    let value = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {value}\n\n")
}

pub fn done() -> String {
    "data: [DONE]\n\n".to_owned()
}
