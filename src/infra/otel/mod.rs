//! OpenTelemetry traces: W3C trace context in and out, spans recorded
//! without locks shared between calls, and an OTLP exporter off the
//! request path (`[otel]`, `docs/tracing.md`).
//!
//! - `ids`: trace and span ids, `traceparent` and `tracestate`.
//! - `sampler`: which traces are recorded.
//! - `span`: a span's data; `LiveSpan` below is one being recorded.
//! - `proto`, `encode`: the OTLP messages and how spans become one.
//! - `export`: the bounded queue's consumer, batching and sending.
//!
//! Sluice does not bridge its `tracing` spans to OpenTelemetry: the call's
//! log span stays as it is, and the layers that know something worth a
//! trace record it on the call's `LiveSpan` (a request extension).

mod encode;
mod export;
pub mod ids;
mod proto;
mod sampler;
mod span;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

pub use ids::{SpanContext, SpanId, TraceId};
pub use span::{Attr, Kind, Link, SpanData, Value};

/// The trace id a log line or a ledger row carries: the call's span's, or
/// with tracing off the caller's own (so records still join the caller's
/// trace); `None` when there is neither.
pub fn trace_id_of(span: Option<&LiveSpan>, headers: &http::HeaderMap) -> Option<String> {
    match span {
        Some(span) => Some(span.context().trace_id.to_hex()),
        None => ids::remote_parent(headers).map(|caller| caller.trace_id.to_hex()),
    }
}

use crate::config::OtelConfig;
use crate::infra::metrics::Metrics;
use crate::util::tasks::Tasks;

/// The process's tracer: a cheap handle, off (`None`) without an endpoint.
#[derive(Clone, Default)]
pub struct Tracer(Option<Arc<Inner>>);

struct Inner {
    sampler: sampler::Sampler,
    queue: mpsc::Sender<SpanData>,
    metrics: Metrics,
    /// `[otel] capture_content`: the bytes each content attribute keeps.
    content_cap: Option<usize>,
}

impl Tracer {
    /// Starts the exporter task when an endpoint is set; logs the `OTEL_*`
    /// values that were ignored.
    pub fn start(config: &OtelConfig, metrics: &Metrics, tasks: &Tasks) -> Result<Self, String> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let Some(url) = config.traces_url() else {
            return Ok(Self(None));
        };
        let exporter = export::Exporter::new(config, &url, metrics.clone(), tasks.clone())?;
        let (queue, spans) = mpsc::channel(config.max_queue_size);
        tasks.spawn(exporter.run(spans, tasks.stop_token()));
        let shown = url.parse::<http::Uri>().ok();
        tracing::info!(
            collector = shown.as_ref().and_then(http::Uri::host).unwrap_or("?"),
            protocol = ?config.protocol,
            sampler = ?config.sampler,
            "exporting traces over OTLP"
        );
        Ok(Self(Some(Arc::new(Inner {
            sampler: sampler::Sampler::new(config.sampler, config.ratio()),
            queue,
            metrics: metrics.clone(),
            content_cap: config.capture_content.then_some(config.content_max_bytes),
        }))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// How many bytes of prompts and answers a span may keep; `None`
    /// unless `[otel] capture_content` is on.
    pub fn content_cap(&self) -> Option<usize> {
        self.0.as_ref()?.content_cap
    }

    /// A new span, sampled here: a child of the caller's `remote` span
    /// when there is one, else a new trace's root. `None` when off.
    pub fn root(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        remote: Option<SpanContext>,
    ) -> Option<LiveSpan> {
        let inner = self.0.as_ref()?;
        let trace_id = remote.as_ref().map_or_else(TraceId::random, |r| r.trace_id);
        let sampled = inner.sampler.keeps(trace_id, remote.as_ref());
        let context = SpanContext {
            trace_id,
            span_id: SpanId::random(),
            sampled,
            trace_state: remote.as_ref().and_then(|r| r.trace_state.clone()),
        };
        let parent = remote.map(|r| (r.span_id, true));
        Some(LiveSpan::new(self.clone(), name, kind, context, parent))
    }

    fn export(&self, span: SpanData) {
        let Some(inner) = &self.0 else { return };
        let reason = match inner.queue.try_send(span) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => "queue_full",
            // The exporter has stopped: a call that ended after shutdown's flush.
            Err(mpsc::error::TrySendError::Closed(_)) => "shutdown",
        };
        inner
            .metrics
            .trace_spans_dropped
            .with_label_values(&[reason])
            .inc();
    }
}

/// A span being recorded, shared by whoever adds to it: the call's span
/// by its layers, an attempt's by the attempt and, for a stream, the relay.
/// It is exported once, at `end` or when the last handle drops (a call
/// whose client left mid-way still shows). Not sampled, it records
/// nothing but still names itself upstream (`traceparent`, flag 00).
#[derive(Clone)]
pub struct LiveSpan(Arc<Cell>);

struct Cell {
    tracer: Tracer,
    context: SpanContext,
    recording: bool,
    /// `None` when not recording or once ended.
    data: Mutex<Option<SpanData>>,
}

impl LiveSpan {
    fn new(
        tracer: Tracer,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        context: SpanContext,
        parent: Option<(SpanId, bool)>,
    ) -> Self {
        let recording = context.sampled;
        let data = recording.then(|| SpanData::start(name, kind, context.clone(), parent));
        Self(Arc::new(Cell {
            tracer,
            context,
            recording,
            data: Mutex::new(data),
        }))
    }

    pub fn context(&self) -> &SpanContext {
        &self.0.context
    }

    pub fn tracer(&self) -> &Tracer {
        &self.0.tracer
    }

    pub fn is_recording(&self) -> bool {
        self.0.recording
    }

    /// A span of the same trace under this one.
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: Kind) -> Self {
        let context = SpanContext {
            span_id: SpanId::random(),
            ..self.0.context.clone()
        };
        let parent = Some((self.0.context.span_id, false));
        Self::new(self.0.tracer.clone(), name, kind, context, parent)
    }

    /// Runs `record` on the span's data if it is recording and not ended:
    /// values are only built for spans that keep them.
    pub fn record(&self, record: impl FnOnce(&mut SpanData)) {
        if !self.0.recording {
            return;
        }
        if let Ok(mut data) = self.0.data.lock()
            && let Some(data) = data.as_mut()
        {
            record(data);
        }
    }

    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.record(|span| span.set(key, value));
    }

    /// Ends the span now and queues it for export; later calls do nothing.
    pub fn end(&self) {
        self.0.end();
    }
}

impl Cell {
    fn end(&self) {
        if !self.recording {
            return;
        }
        let taken = self.data.lock().ok().and_then(|mut data| data.take());
        if let Some(mut span) = taken {
            span.close();
            self.tracer.export(span);
        }
    }
}

/// A span no one ended (its call or attempt was dropped mid-way: the
/// client left, the shutdown cut it) is exported marked so.
impl Drop for Cell {
    fn drop(&mut self) {
        if let Ok(Some(data)) = self.data.get_mut().map(Option::as_mut) {
            data.set("sluice.cancelled", true);
        }
        self.end();
    }
}
