//! The exporter: one owned task that takes finished spans off a bounded
//! queue, gathers them into batches (full, or `schedule_delay` after the
//! first span) and sends each over OTLP/HTTP or OTLP/gRPC. Calls never
//! wait for it: a span that finds the queue full is dropped and counted.
//! A refused or failed export is retried while the export's deadline
//! allows when the answer says retrying may help, then dropped and
//! counted; nothing an exporter does reaches a client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::encode;
use super::proto;
use super::span::SpanData;
use crate::config::{OtelConfig, OtlpCompression, OtlpProtocol};
use crate::infra::http_pool::{PooledClient, pooled_client};
use crate::infra::metrics::Metrics;
use crate::infra::telemetry::LogEvery;
use crate::util::tasks::Tasks;
use crate::util::text::root_cause;

/// The gRPC method of a trace export.
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// A collector's answer is small; more is not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The first wait before a retry (doubled each time) when the answer names none.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The most a collector that is down or slow may hold shutdown up.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);
/// gRPC codes the OTLP specification calls retryable.
const GRPC_RETRYABLE: [u32; 6] = [1, 4, 10, 11, 14, 15];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot reach the collector: {0}")]
    Send(String),
    #[error("the collector answered {0}")]
    Refused(String),
    #[error("no answer within the export timeout")]
    Timeout,
}

pub struct Exporter {
    client: PooledClient,
    url: Uri,
    headers: HeaderMap,
    framing: Framing,
    timeout: Duration,
    resource: Arc<proto::Resource>,
    tasks: Tasks,
    batch_size: usize,
    delay: Duration,
    metrics: Metrics,
    failures: LogEvery,
}

impl Exporter {
    pub fn new(
        config: &OtelConfig,
        url: &str,
        metrics: Metrics,
        tasks: Tasks,
    ) -> Result<Self, String> {
        let grpc = config.protocol == OtlpProtocol::Grpc;
        let mut url: Uri = url
            .parse()
            .map_err(|e| format!("otel.endpoint `{}`: {e}", crate::config::redacted_text(url)))?;
        if grpc {
            let mut parts = url.into_parts();
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static(GRPC_PATH));
            url = Uri::from_parts(parts).map_err(|e| format!("otel.endpoint: {e}"))?;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("otel.headers: `{name}` is not a header name"))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                format!("otel.headers: the value of `{name}` is not a header value")
            })?;
            headers.insert(name, value);
        }
        Ok(Self {
            client: pooled_client(grpc)?,
            url,
            headers,
            framing: Framing {
                gzip: config.compression == OtlpCompression::Gzip,
                grpc,
            },
            timeout: config.timeout,
            resource: Arc::new(encode::resource(config)),
            tasks,
            batch_size: config.max_export_batch_size,
            delay: config.schedule_delay,
            metrics,
            failures: LogEvery::store_failures(),
        })
    }

    /// Exports until `stop`, then exports what is queued and returns. A
    /// collector that is down or slow holds shutdown up for at most
    /// `SHUTDOWN_FLUSH`: what it has not taken by then is dropped.
    pub async fn run(self, mut queue: mpsc::Receiver<SpanData>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batch_size);
        // When stop came during an export: that export and the rest share
        // one deadline.
        let mut flush_by = None;
        loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => None,
                first = queue.recv() => first,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let due = Instant::now() + self.delay;
            while batch.len() < self.batch_size {
                tokio::select! {
                    more = queue.recv() => match more {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                    () = tokio::time::sleep_until(due) => break,
                    () = stop.cancelled() => break,
                }
            }
            let count = batch.len() as u64;
            let sending = self.send(std::mem::take(&mut batch), Instant::now() + self.timeout);
            tokio::pin!(sending);
            tokio::select! {
                () = &mut sending => {}
                () = stop.cancelled() => {
                    let deadline = Instant::now() + SHUTDOWN_FLUSH;
                    flush_by = Some(deadline);
                    if tokio::time::timeout_at(deadline, &mut sending).await.is_err() {
                        self.failed(count, &ExportError::Timeout);
                    }
                    break;
                }
            }
        }
        // Shutdown: what is queued goes out in full batches, in time.
        let deadline = flush_by.unwrap_or_else(|| Instant::now() + SHUTDOWN_FLUSH);
        queue.close();
        while let Some(span) = queue.recv().await {
            batch.push(span);
            if batch.len() == self.batch_size {
                self.send_by(std::mem::take(&mut batch), deadline).await;
            }
        }
        if !batch.is_empty() {
            self.send_by(batch, deadline).await;
        }
    }

    /// Sends within `deadline`, or drops if it has passed.
    async fn send_by(&self, spans: Vec<SpanData>, deadline: Instant) {
        if Instant::now() >= deadline {
            return self.failed(spans.len() as u64, &ExportError::Timeout);
        }
        self.send(spans, deadline.min(Instant::now() + self.timeout))
            .await;
    }

    async fn send(&self, spans: Vec<SpanData>, deadline: Instant) {
        let count = spans.len() as u64;
        // Encoding and compressing a batch (megabytes with content
        // captured) is CPU work: off the runtime's workers.
        let (resource, framing) = (self.resource.clone(), self.framing);
        let encoded = self
            .tasks
            .spawn_blocking(move || framing.body(encode::export(&resource, &spans)))
            .await;
        let body = match encoded {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => return self.failed(count, &ExportError::Send(error.to_string())),
            Err(error) => return self.failed(count, &ExportError::Send(error.to_string())),
        };
        match tokio::time::timeout_at(deadline, self.send_until(body, deadline)).await {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(count);
                self.metrics.trace_spans_exported.inc_by(count - rejected);
                if rejected > 0 {
                    self.metrics
                        .trace_spans_dropped
                        .with_label_values(&["rejected"])
                        .inc_by(rejected);
                }
            }
            Ok(Err(error)) => self.failed(count, &error),
            Err(_) => self.failed(count, &ExportError::Timeout),
        }
    }

    fn failed(&self, count: u64, error: &ExportError) {
        self.metrics
            .trace_spans_dropped
            .with_label_values(&["export_failed"])
            .inc_by(count);
        if self.failures.due() {
            tracing::warn!(spans = count, %error, "span export failed; spans dropped");
        }
    }

    /// Sends until an answer is final or the deadline leaves no time for
    /// another try; `Ok` with the spans the collector says it rejected.
    async fn send_until(&self, body: Bytes, deadline: Instant) -> Result<u64, ExportError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let (error, wait) = match self.try_once(body.clone()).await {
                Ok(rejected) => return Ok(rejected),
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Retry(error, hint)) => (error, hint.unwrap_or(backoff)),
            };
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    async fn try_once(&self, body: Bytes) -> Result<u64, Attempt> {
        let mut request = Request::post(self.url.clone());
        let headers = request
            .headers_mut()
            .ok_or(Attempt::Final(ExportError::Send("bad request".to_owned())))?;
        headers.extend(self.headers.clone());
        if self.framing.grpc {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
            if self.framing.gzip {
                headers.insert("grpc-encoding", HeaderValue::from_static("gzip"));
            }
        } else {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            if self.framing.gzip {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Attempt::Final(ExportError::Send(e.to_string())))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Attempt::Retry(ExportError::Send(root_cause(&e)), None))?;
        let (head, body) = response.into_parts();
        let hint = retry_after(&head.headers);
        let collected = match Limited::new(body, MAX_ANSWER_BYTES).collect().await {
            Ok(collected) => collected,
            // Accepted over HTTP: an answer too long to read is no reason
            // to send the spans again.
            Err(_) if head.status.is_success() && !self.framing.grpc => return Ok(0),
            Err(e) => return Err(Attempt::Retry(ExportError::Send(e.to_string()), None)),
        };
        let trailers = collected.trailers().cloned();
        let answer = collected.to_bytes();
        if self.framing.grpc {
            grpc_answer(head.status, &head.headers, trailers.as_ref(), &answer)
        } else {
            http_answer(head.status, &answer, hint)
        }
    }
}

/// How a message is sent: compressed or not, framed for gRPC or not.
#[derive(Clone, Copy)]
struct Framing {
    gzip: bool,
    grpc: bool,
}

impl Framing {
    /// The message as sent: compressed if asked, framed for gRPC.
    fn body(self, message: Vec<u8>) -> std::io::Result<Bytes> {
        let payload = if self.gzip {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&message)?;
            encoder.finish()?
        } else {
            message
        };
        if !self.grpc {
            return Ok(Bytes::from(payload));
        }
        let mut framed = Vec::with_capacity(payload.len() + 5);
        framed.push(u8::from(self.gzip));
        let length = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&payload);
        Ok(Bytes::from(framed))
    }
}

/// Why one try did not export, and whether another may.
enum Attempt {
    Retry(ExportError, Option<Duration>),
    Final(ExportError),
}

fn http_answer(status: StatusCode, answer: &[u8], hint: Option<Duration>) -> Result<u64, Attempt> {
    if status.is_success() {
        return Ok(rejected(answer));
    }
    let error = ExportError::Refused(format!("HTTP {}", status.as_u16()));
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(Attempt::Retry(error, hint)),
        _ => Err(Attempt::Final(error)),
    }
}

fn grpc_answer(
    status: StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    answer: &[u8],
) -> Result<u64, Attempt> {
    // A trailers-only answer carries its status in the headers.
    let code = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
    match code {
        Some(0) => Ok(answer.get(5..).map_or(0, rejected)),
        Some(code) => {
            let error = ExportError::Refused(format!("gRPC status {code}"));
            if GRPC_RETRYABLE.contains(&code) {
                Err(Attempt::Retry(error, None))
            } else {
                Err(Attempt::Final(error))
            }
        }
        // Not a gRPC server's answer (a proxy's): its HTTP status decides.
        None => {
            let error =
                ExportError::Refused(format!("HTTP {} without a gRPC status", status.as_u16()));
            match status.as_u16() {
                400..=428 | 430..=499 => Err(Attempt::Final(error)),
                _ => Err(Attempt::Retry(error, None)),
            }
        }
    }
}

/// The spans a successful answer's partial success says were rejected.
fn rejected(answer: &[u8]) -> u64 {
    proto::ExportTraceServiceResponse::decode(answer)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

/// `Retry-After` in seconds, at most 30.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(30)))
}
