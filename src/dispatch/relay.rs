//! The SSE relay: passes upstream chunks through untouched, sends comment
//! keep-alives until the first upstream byte, enforces the idle timeout, and
//! ends a broken stream with an OpenAI-shaped error event instead of a silent
//! truncation. Events Sluice adds start at an event boundary, however the
//! upstream spelled or cut its stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::hide_usage::UsageHider;
use super::respond::upstream_failure;
use super::trace::AnswerFacts;
use crate::infra::otel::LiveSpan;
use crate::infra::sse;
use crate::infra::sse::usage::StreamUsageScanner;
use crate::upstream::BodyStream;
use crate::util::shutdown::Cut;
use crate::vocab::error::{GatewayError, sse_error_event};
use crate::vocab::{Outcome, UsageHooks};
use crate::vocab::{StreamEnded, StreamOutcome};

const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// A stream whose upstream answered 2xx.
pub struct Started {
    pub body: BodyStream,
    pub deployment: Arc<str>,
    pub idle_timeout: Duration,
    /// The serving attempt's trace span, ended with the stream.
    pub span: Option<LiveSpan>,
}

/// The attempts still running: a started stream, or an error body to send
/// (its usage outcome already reported by whoever resolved the future).
pub type PendingResponse = Pin<Box<dyn Future<Output = Result<Started, Bytes>> + Send>>;
type RelayItem = Option<Result<Bytes, std::io::Error>>;

enum Phase {
    AwaitingHeaders(PendingResponse),
    Streaming(BodyStream),
    Done,
}

/// The relay's side of `StreamEnded`: tells its outcome on drop.
struct EndGuard {
    outcome: Option<StreamOutcome>,
    tell: StreamEnded,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(StreamOutcome::ClientClosed);
        self.tell.tell(outcome);
    }
}

/// What a relay needs besides its upstream.
pub struct RelaySettings {
    pub deployment: Arc<str>,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    pub cut: Cut,
    /// Observed with the time from the request's arrival to the first upstream chunk.
    pub first_token: Option<(prometheus::Histogram, Instant)>,
    /// Set when Sluice asked for usage the client did not: hide it again.
    pub hide_usage: Option<UsageHider>,
    /// The serving attempt's trace span (when recorded) and what the
    /// stream tells about the answer, set on it when the stream ends.
    pub trace: Option<(LiveSpan, AnswerFacts)>,
}

pub struct SseRelay {
    phase: Phase,
    settings: RelaySettings,
    /// Layers waiting for token usage, and the scanner that finds it.
    usage: Option<(UsageHooks, StreamUsageScanner)>,
    /// Fires at the next keep-alive or idle check. Chunks only record
    /// `last_activity`; the timer is re-armed lazily when it fires, so the
    /// per-chunk cost is one clock read, not a timer-wheel update.
    timer: Pin<Box<Sleep>>,
    /// `None` once the first upstream byte has arrived.
    next_keepalive: Option<Instant>,
    /// The last relayed chunk did not end an event: an event Sluice adds
    /// then needs a blank line first, or it would be read as part of the
    /// upstream's cut one.
    mid_event: bool,
    last_activity: Instant,
    end: EndGuard,
}

impl SseRelay {
    /// Relays a stream whose upstream already answered 2xx.
    pub fn streaming(body: BodyStream, settings: RelaySettings, hooks: Option<UsageHooks>) -> Self {
        Self::new(Phase::Streaming(body), settings, hooks)
    }

    /// Relays a stream whose upstream has not answered yet: the client already
    /// got 200, so an upstream error status becomes an SSE error event.
    pub fn awaiting(
        pending: PendingResponse,
        settings: RelaySettings,
        hooks: Option<UsageHooks>,
    ) -> Self {
        Self::new(Phase::AwaitingHeaders(pending), settings, hooks)
    }

    fn new(phase: Phase, settings: RelaySettings, hooks: Option<UsageHooks>) -> Self {
        let now = Instant::now();
        let next_keepalive = now + settings.keepalive;
        let first_wake = next_keepalive.min(now + settings.idle_timeout);
        Self {
            phase,
            settings,
            usage: hooks.map(|hooks| (hooks, StreamUsageScanner::default())),
            timer: Box::pin(tokio::time::sleep_until(first_wake)),
            next_keepalive: Some(next_keepalive),
            mid_event: false,
            last_activity: now,
            end: EndGuard {
                outcome: None,
                tell: StreamEnded::default(),
            },
        }
    }

    /// Resolves when the stream has ended, with how.
    pub fn ended(&self) -> StreamEnded {
        self.end.tell.clone()
    }

    fn finish_with(&mut self, event: Bytes, outcome: StreamOutcome) -> Poll<RelayItem> {
        self.end.outcome = Some(outcome);
        self.phase = Phase::Done;
        self.report_usage();
        self.end_trace(Some(outcome));
        let mid_event = std::mem::take(&mut self.mid_event);
        Poll::Ready(Some(Ok(sse::as_own_event(event, mid_event))))
    }

    /// Upstream bytes arrived: keep-alives stop, and the first ones that are
    /// not only comments (an upstream's own keep-alives) time the first token.
    fn upstream_spoke(&mut self, chunk: &[u8]) {
        self.next_keepalive = None;
        self.last_activity = Instant::now();
        if self.settings.first_token.is_some()
            && !sse::only_comments(chunk)
            && let Some((histogram, received)) = self.settings.first_token.take()
        {
            let waited = received.elapsed().as_secs_f64();
            histogram.observe(waited);
            if let Some((span, _)) = &self.settings.trace {
                span.record(|data| {
                    data.event("sluice.first_token", Vec::new());
                    data.set("sluice.time_to_first_token_s", waited);
                });
            }
        }
        if let Some((_, facts)) = &mut self.settings.trace {
            facts.scan(chunk);
        }
    }

    /// Ends the serving attempt's span with what the stream said, once.
    fn end_trace(&mut self, outcome: Option<StreamOutcome>) {
        let Some((span, facts)) = self.settings.trace.take() else {
            return;
        };
        facts.record_on(&span);
        let outcome = outcome.unwrap_or(StreamOutcome::ClientClosed);
        span.record(|data| {
            data.set("sluice.stream.outcome", outcome.as_str());
            if outcome.is_error() {
                data.set("error.type", outcome.as_str());
                data.error = Some(String::new());
            }
        });
        span.end();
    }

    /// Reports what the scanner found, once, when the stream ends either way.
    fn report_usage(&mut self) {
        if let Some((hooks, scanner)) = self.usage.take() {
            hooks.finish(scanner.usage().map_or(Outcome::Unknown, Outcome::Reported));
        }
    }

    /// Nothing arrived: send a keep-alive, end on idle timeout, or wait.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<RelayItem> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let idle_deadline = self.last_activity + self.settings.idle_timeout;
            if now >= idle_deadline {
                let error = GatewayError::UpstreamTimeout {
                    deployment: self.settings.deployment.to_string(),
                    timeout_ms: self.settings.idle_timeout.as_millis(),
                };
                return self.finish_with(error.sse_event(), StreamOutcome::Timeout);
            }
            let keepalive_due = self.next_keepalive.is_some_and(|at| now >= at);
            if keepalive_due {
                self.next_keepalive = Some(now + self.settings.keepalive);
            }
            let wake = self
                .next_keepalive
                .map_or(idle_deadline, |at| at.min(idle_deadline));
            self.timer.as_mut().reset(wake);
            if keepalive_due {
                return Poll::Ready(Some(Ok(Bytes::from_static(KEEPALIVE_COMMENT))));
            }
        }
    }
}

/// A client that leaves mid-stream (the SDKs close right after `[DONE]`,
/// often before the upstream's body has ended) still has what the stream
/// said metered: the usage scanned so far, else an unknown outcome the
/// observers estimate.
impl Drop for SseRelay {
    fn drop(&mut self) {
        self.report_usage();
        self.end_trace(self.end.outcome);
    }
}

impl Stream for SseRelay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayItem> {
        let this = self.get_mut();
        if !matches!(this.phase, Phase::Done) && this.settings.cut.is_fired() {
            return this.finish_with(
                GatewayError::ShuttingDown.sse_event(),
                StreamOutcome::ShuttingDown,
            );
        }
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::AwaitingHeaders(pending) => match pending.as_mut().poll(cx) {
                    Poll::Ready(Ok(started)) => {
                        this.phase = Phase::Streaming(started.body);
                        this.settings.trace =
                            started.span.map(|span| (span, AnswerFacts::streamed()));
                        this.settings.deployment = started.deployment;
                        this.settings.idle_timeout = started.idle_timeout;
                        this.last_activity = Instant::now();
                    }
                    Poll::Ready(Err(body)) => {
                        // The attempts' owner has reported this failure's usage.
                        this.usage = None;
                        return this
                            .finish_with(sse_error_event(&body), StreamOutcome::UpstreamError);
                    }
                    Poll::Pending => return this.poll_timer(cx),
                },
                Phase::Streaming(body) => match body.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        this.upstream_spoke(&chunk);
                        if let Some((_, scanner)) = &mut this.usage {
                            scanner.scan(&chunk);
                        }
                        let chunk = match &mut this.settings.hide_usage {
                            Some(hider) => hider.filter(chunk),
                            None => chunk,
                        };
                        if chunk.is_empty() {
                            continue;
                        }
                        this.mid_event = !sse::ends_event(&chunk);
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    Poll::Ready(Some(Err(error))) => {
                        let event = upstream_failure(&this.settings.deployment, &error).sse_event();
                        return this.finish_with(event, StreamOutcome::UpstreamError);
                    }
                    Poll::Ready(None) => {
                        this.end.outcome = Some(StreamOutcome::Completed);
                        this.phase = Phase::Done;
                        this.report_usage();
                        this.end_trace(Some(StreamOutcome::Completed));
                        let rest = this
                            .settings
                            .hide_usage
                            .as_mut()
                            .and_then(UsageHider::finish);
                        return Poll::Ready(rest.map(Ok));
                    }
                    Poll::Pending => return this.poll_timer(cx),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamError;
    use futures_util::StreamExt;

    fn relay_of(chunks: Vec<(u64, Result<&'static str, UpstreamError>)>) -> SseRelay {
        let body = futures_util::stream::iter(chunks)
            .then(|(delay_ms, item)| async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                item.map(|text| Bytes::from_static(text.as_bytes()))
            })
            .boxed();
        SseRelay::streaming(
            body,
            RelaySettings {
                deployment: Arc::from("dep"),
                keepalive: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                cut: Cut::default(),
                first_token: None,
                hide_usage: None,
                trace: None,
            },
            None,
        )
    }

    async fn collect(relay: SseRelay) -> Vec<String> {
        relay
            .map(|item| String::from_utf8(item.unwrap().to_vec()).unwrap())
            .collect()
            .await
    }

    /// What the stream's end was told, once it has been.
    fn told(ended: &StreamEnded) -> Option<StreamOutcome> {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let into = seen.clone();
        ended.then(move |outcome| *into.lock().unwrap() = Some(outcome));
        *seen.lock().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_relay_tells_how_its_stream_ended() {
        let ended = |chunks| {
            let relay = relay_of(chunks);
            (relay.ended(), relay)
        };
        let (outcome, relay) = ended(vec![(1, Ok("data: 1\n\n"))]);
        collect(relay).await;
        assert_eq!(told(&outcome), Some(StreamOutcome::Completed));
        let (outcome, relay) = ended(vec![(1, Err(UpstreamError::Body("reset".into())))]);
        collect(relay).await;
        assert_eq!(told(&outcome), Some(StreamOutcome::UpstreamError));
        let (outcome, relay) = ended(vec![(31_000, Ok("late"))]);
        collect(relay).await;
        assert_eq!(told(&outcome), Some(StreamOutcome::Timeout));
        let (outcome, mut relay) = ended(vec![(1, Ok("data: 1\n\n")), (10, Ok("data: 2\n\n"))]);
        assert!(relay.next().await.is_some());
        let seen = Arc::new(std::sync::Mutex::new(None));
        let into = seen.clone();
        outcome.then(move |outcome| *into.lock().unwrap() = Some(outcome));
        assert_eq!(*seen.lock().unwrap(), None, "told only at the end");
        drop(relay);
        assert_eq!(*seen.lock().unwrap(), Some(StreamOutcome::ClientClosed));
    }

    #[tokio::test(start_paused = true)]
    async fn keepalives_only_before_the_first_byte() {
        let events = collect(relay_of(vec![
            (12_000, Ok("data: 1\n\n")),
            (12_000, Ok("data: [DONE]\n\n")),
        ]))
        .await;
        assert_eq!(
            events,
            vec![
                ": keep-alive\n\n",
                ": keep-alive\n\n",
                "data: 1\n\n",
                "data: [DONE]\n\n"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_upstream_ends_with_timeout_event() {
        let events = collect(relay_of(vec![(1, Ok("data: 1\n\n")), (31_000, Ok("late"))])).await;
        assert_eq!(events.len(), 2);
        assert!(events[1].starts_with("data: {\"error\""), "{events:?}");
        assert!(events[1].contains("upstream_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_is_timed_past_an_upstreams_comments() {
        let histogram =
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("ttft", "ttft"))
                .unwrap();
        let mut relay = relay_of(vec![
            (1_000, Ok(": ping\r\n\r\n")),
            (2_000, Ok("data: {\"choices\":[]}\r\n\r\n")),
        ]);
        relay.settings.first_token = Some((histogram.clone(), Instant::now()));
        let events = collect(relay).await;
        assert_eq!(events.len(), 2);
        assert_eq!(histogram.get_sample_count(), 1);
        assert!(
            histogram.get_sample_sum() >= 3.0,
            "{}",
            histogram.get_sample_sum()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_after_a_cut_event_starts_on_its_own() {
        let events = collect(relay_of(vec![
            (1, Ok("data: {\"choices\":")),
            (1, Err(UpstreamError::Body("connection reset".into()))),
        ]))
        .await;
        assert!(events[1].starts_with("\n\ndata: {\"error\""), "{events:?}");
        let events = collect(relay_of(vec![
            (1, Ok("data: 1\r\n\r\n")),
            (31_000, Ok("late")),
        ]))
        .await;
        assert!(events[1].starts_with("data: {\"error\""), "{events:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn broken_upstream_ends_with_error_event_and_no_done() {
        let events = collect(relay_of(vec![
            (1, Ok("data: 1\n\n")),
            (1, Err(UpstreamError::Body("connection reset".into()))),
        ]))
        .await;
        assert_eq!(events[0], "data: 1\n\n");
        assert!(events[1].contains("connection reset"));
        assert!(!events.iter().any(|e| e.contains("[DONE]")));
    }
}
