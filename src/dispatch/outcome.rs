//! What an attempt, and a whole call's attempts, come to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::engines::limits::AttemptEnd;
use crate::engines::routing::Backend;
use crate::vocab::error::GatewayError;

/// A 2xx answer.
pub struct Success {
    pub backend: Arc<Backend>,
    pub model: Arc<str>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Reply,
    pub attempts: u32,
    /// Time spent in upstream attempts, for the gateway-overhead metric.
    pub upstream_time: Duration,
    /// The successful attempt's trace span, still open for a stream (the
    /// relay ends it).
    pub span: Option<crate::infra::otel::LiveSpan>,
    /// Set when the call was hedged: which leg served it.
    pub hedge: Option<crate::vocab::Hedged>,
}

pub enum Reply {
    Whole(Bytes),
    Stream(crate::upstream::BodyStream),
}

/// Why no 2xx answer came.
pub struct Failure {
    pub error: FailureKind,
    pub attempts: u32,
    /// Whether an upstream may have done work (timeouts, broken bodies).
    pub maybe_produced: bool,
}

pub enum FailureKind {
    /// The upstream's own error response, normalised, passed on as it is.
    Upstream {
        backend: Arc<Backend>,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Gateway(GatewayError),
}

/// For the log: the status, or the gateway's own message.
impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream { status, .. } => write!(f, "upstream answered {status}"),
            Self::Gateway(error) => error.fmt(f),
        }
    }
}

pub(super) enum Outcome {
    Success(Success),
    /// Worth another attempt; `hint` is the upstream's own wait, if any.
    /// `absorbed`: concurrency push-back the deployment's adaptive limit
    /// took (it cut the limit, the deployment stays in rotation), or a
    /// realtime call's short wait for a full deployment (see
    /// `attempt::patient`): the call tries again without spending an attempt.
    Retryable {
        failure: FailureKind,
        hint: Option<Duration>,
        absorbed: bool,
    },
    /// Not worth another attempt; `produced` when the upstream did the work
    /// (an answer too large, or in the wrong form), so usage is unknown.
    Final {
        failure: FailureKind,
        produced: bool,
    },
}

impl Outcome {
    /// Worth another attempt, with no hint.
    pub(super) fn retry(failure: FailureKind) -> Self {
        Self::Retryable {
            failure,
            hint: None,
            absorbed: false,
        }
    }
}

/// What an attempt did, for its deployment's token charge and for whether
/// the call may have produced output.
pub(super) fn attempt_end(outcome: &Outcome) -> AttemptEnd {
    match outcome {
        Outcome::Success(_) => AttemptEnd::Served,
        Outcome::Final { produced: true, .. }
        | Outcome::Retryable {
            failure: FailureKind::Gateway(GatewayError::UpstreamTimeout { .. }),
            ..
        } => AttemptEnd::MaybeProduced,
        Outcome::Final { .. } | Outcome::Retryable { .. } => AttemptEnd::NothingProduced,
    }
}
