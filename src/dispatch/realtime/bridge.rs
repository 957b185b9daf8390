//! A Realtime session's two sockets joined: every message passed on as it
//! came (never re-encoded), each `response.done` read for its `usage`, the
//! session closed when either side closes, when it has been idle or open
//! too long, or when the gateway's shutdown grace is over, each with its
//! own close code so a client can tell them apart.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::upstream::LocalSession;
use crate::upstream::realtime::{RealtimeUpstream, RemoteSocket};
use crate::util::shutdown::Cut;
use crate::vocab::Usage;

pub type ClientSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How often a session checks its deadlines and the end of the shutdown
/// grace, at the most: one timer per session rather than one per message.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a closing side gets to answer the close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub struct Limits {
    pub idle: Duration,
    pub total: Duration,
    pub cut: Cut,
}

/// What a session used, from its responses' reports.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Metered {
    pub usage: Usage,
    pub responses: u64,
}

impl Metered {
    fn read(&mut self, text: &str) {
        if let Some(usage) = usage_of(text) {
            self.usage.prompt_tokens += usage.prompt_tokens;
            self.usage.completion_tokens += usage.completion_tokens;
            self.usage.cached_tokens += usage.cached_tokens;
            self.responses += 1;
        }
    }
}

/// Why a session ended, and what the client is told.
enum End {
    /// The client closed (or left): nothing more to tell it.
    ClientLeft,
    /// The deployment closed: its close frame goes on as it sent it.
    UpstreamClosed(Option<CloseFrame>),
    UpstreamFailed,
    Idle,
    TimeUp,
    ShuttingDown,
}

impl End {
    fn frame(&self, limits: &Limits) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Self::ClientLeft => return None,
            Self::UpstreamClosed(frame) => return frame.clone(),
            Self::UpstreamFailed => (CloseCode::Error, "upstream connection failed".to_owned()),
            Self::Idle => (
                CloseCode::Normal,
                format!("session idle for {}s", limits.idle.as_secs()),
            ),
            Self::TimeUp => (
                CloseCode::Normal,
                format!("session reached its {}s limit", limits.total.as_secs()),
            ),
            Self::ShuttingDown => (CloseCode::Away, "gateway shutting down".to_owned()),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

/// Runs the session to its end; what it used.
pub async fn run(mut client: ClientSocket, upstream: RealtimeUpstream, limits: Limits) -> Metered {
    let mut metered = Metered::default();
    let end = match upstream {
        RealtimeUpstream::Remote(socket) => {
            remote(&mut client, *socket, &limits, &mut metered).await
        }
        RealtimeUpstream::Local(session) => {
            local(&mut client, session, &limits, &mut metered).await
        }
    };
    if let Some(frame) = end.frame(&limits) {
        let _ = tokio::time::timeout(CLOSE_WAIT, client.close(Some(frame))).await;
    }
    metered
}

/// The session's deadlines (idle since `last`, and its total) and the
/// shutdown grace, checked on one timer.
struct Clock {
    opened: Instant,
    last: Instant,
    check: tokio::time::Interval,
}

impl Clock {
    fn new(limits: &Limits) -> Self {
        let now = Instant::now();
        let every = CHECK_EVERY
            .min(limits.idle / 4)
            .max(Duration::from_millis(1));
        let mut check = tokio::time::interval_at(now + every, every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            opened: now,
            last: now,
            check,
        }
    }

    /// Waits for the next check; the ending it finds, if any.
    async fn due(&mut self, limits: &Limits) -> Option<End> {
        self.check.tick().await;
        let now = Instant::now();
        if limits.cut.is_fired() {
            Some(End::ShuttingDown)
        } else if now >= self.opened + limits.total {
            Some(End::TimeUp)
        } else if now >= self.last + limits.idle {
            Some(End::Idle)
        } else {
            None
        }
    }
}

async fn remote(
    client: &mut ClientSocket,
    mut upstream: RemoteSocket,
    limits: &Limits,
    metered: &mut Metered,
) -> End {
    let mut clock = Clock::new(limits);
    let end = loop {
        tokio::select! {
            from_client = client.next() => match from_client {
                Some(Ok(Message::Close(frame))) => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, upstream.close(frame)).await;
                    return End::ClientLeft;
                }
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    clock.last = Instant::now();
                    if upstream.send(message).await.is_err() {
                        break End::UpstreamFailed;
                    }
                }
                // Pings are answered by the socket itself.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break End::ClientLeft,
            },
            from_upstream = upstream.next() => match from_upstream {
                Some(Ok(Message::Close(frame))) => return End::UpstreamClosed(frame),
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    clock.last = Instant::now();
                    if let Message::Text(text) = &message {
                        metered.read(text);
                    }
                    if client.send(message).await.is_err() {
                        break End::ClientLeft;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return End::UpstreamFailed,
            },
            due = clock.due(limits) => if let Some(end) = due {
                break end;
            },
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, upstream.close(None)).await;
    end
}

async fn local(
    client: &mut ClientSocket,
    mut session: Box<dyn LocalSession>,
    limits: &Limits,
    metered: &mut Metered,
) -> End {
    if send_all(client, session.opening(), metered).await.is_err() {
        return End::ClientLeft;
    }
    let mut clock = Clock::new(limits);
    loop {
        tokio::select! {
            from_client = client.next() => match from_client {
                Some(Ok(Message::Text(text))) => {
                    clock.last = Instant::now();
                    if send_all(client, session.on_client(&text), metered).await.is_err() {
                        return End::ClientLeft;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return End::ClientLeft,
                Some(Ok(_)) => clock.last = Instant::now(),
            },
            due = clock.due(limits) => if let Some(end) = due {
                return end;
            },
        }
    }
}

async fn send_all(
    client: &mut ClientSocket,
    events: Vec<String>,
    metered: &mut Metered,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for event in events {
        metered.read(&event);
        client.send(Message::text(event)).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    response: Option<Response>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    usage: Option<ReportedUsage>,
}

#[derive(Deserialize)]
struct ReportedUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_token_details: Option<InputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: u64,
}

/// The usage a `response.done` event reports; other events are skipped
/// unparsed (the type is looked for in the text first).
pub fn usage_of(text: &str) -> Option<Usage> {
    if !text.contains("response.done") {
        return None;
    }
    let event: Event = serde_json::from_str(text).ok()?;
    if event.kind != "response.done" {
        return None;
    }
    let usage = event.response?.usage?;
    Some(Usage {
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
        cached_tokens: usage
            .input_token_details
            .map_or(0, |details| details.cached_tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_response_done_only() {
        let done = r#"{"type":"response.done","event_id":"e","response":{"id":"r","usage":{"total_tokens":30,"input_tokens":20,"output_tokens":10,"input_token_details":{"cached_tokens":5,"audio_tokens":0}}}}"#;
        let mut metered = Metered::default();
        metered.read(done);
        metered.read(done);
        metered.read(r#"{"type":"response.output_text.delta","delta":"response.done"}"#);
        metered.read(r#"{"type":"response.done","response":{"status":"failed"}}"#);
        metered.read("not json response.done");
        assert_eq!(
            metered,
            Metered {
                usage: Usage {
                    prompt_tokens: 40,
                    completion_tokens: 20,
                    cached_tokens: 10
                },
                responses: 2
            }
        );
    }
}
