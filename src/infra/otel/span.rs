//! A span's data while it is open and once it ends: what the exporter
//! encodes. Attribute keys are static; values borrow the gateway's shared
//! names (`Arc<str>`) where they can, so recording costs few allocations.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::ids::{SpanContext, SpanId};

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Shared(Arc<str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Strings(Vec<String>),
}

impl From<&'static str> for Value {
    fn from(text: &'static str) -> Self {
        Self::Str(Cow::Borrowed(text))
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Str(Cow::Owned(text))
    }
}

impl From<&Arc<str>> for Value {
    fn from(text: &Arc<str>) -> Self {
        Self::Shared(text.clone())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Self::Float(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

pub type Attr = (&'static str, Value);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub name: &'static str,
    pub at_unix_nanos: u64,
    pub attrs: Vec<Attr>,
}

/// Another trace's span this one follows from (a batch line and the call
/// that created its batch).
#[derive(Clone, Debug)]
pub struct Link {
    pub context: SpanContext,
}

/// A recording span: its times, attributes, events, links and status.
#[derive(Debug)]
pub struct SpanData {
    pub name: Cow<'static, str>,
    pub kind: Kind,
    pub context: SpanContext,
    pub parent: Option<SpanId>,
    /// The parent is the caller's, from `traceparent`.
    pub remote_parent: bool,
    pub start_unix_nanos: u64,
    /// Monotonic: the end is the start plus the time elapsed since.
    started: Instant,
    pub end_unix_nanos: u64,
    pub attrs: Vec<Attr>,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    /// `Some` marks the span failed, with a message (maybe empty).
    pub error: Option<String>,
}

impl SpanData {
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        context: SpanContext,
        parent: Option<(SpanId, bool)>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            context,
            parent: parent.map(|(id, _)| id),
            remote_parent: parent.is_some_and(|(_, remote)| remote),
            start_unix_nanos: unix_nanos(),
            started: Instant::now(),
            end_unix_nanos: 0,
            attrs: Vec::with_capacity(16),
            events: Vec::new(),
            links: Vec::new(),
            error: None,
        }
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attrs.push((key, value.into()));
    }

    /// An event now, with its attributes.
    pub fn event(&mut self, name: &'static str, attrs: Vec<Attr>) {
        self.events.push(Event {
            name,
            at_unix_nanos: self.now_unix_nanos(),
            attrs,
        });
    }

    /// Unix time now, on this span's monotonic clock.
    pub fn now_unix_nanos(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.start_unix_nanos.saturating_add(elapsed)
    }

    pub fn close(&mut self) {
        self.end_unix_nanos = self.now_unix_nanos();
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
