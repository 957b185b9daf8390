//! What a call's answer carries back out, past the stages, for the outer
//! layers (access log, metrics) and the ledger.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

/// The cache stage's verdict on every answer it passed (`hit`,
/// `semantic-hit`, `miss`, `bypass`); the ledger records it.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("x-sluice-cache");

/// Time the upstream took for a request, so the metrics layer can report the
/// gateway's own share.
#[derive(Clone, Copy)]
pub struct UpstreamTime(pub Duration);

/// Which model and deployment served a request, for the access log.
#[derive(Clone)]
pub struct ServedBy {
    pub model: Arc<str>,
    pub deployment: Arc<str>,
}

/// Which leg of a hedged call served it (`[models.NAME.hedge]`), for the
/// `x-sluice-hedge` header and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hedged {
    /// The first attempts answered first; the hedge was cancelled.
    Lost,
    /// The hedge answered first; the first attempts were cancelled.
    Won,
    /// The hedge failed; the first attempts served.
    Failed,
}

impl Hedged {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Won => "won",
            Self::Failed => "failed",
        }
    }
}

/// How a relayed stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOutcome {
    /// The upstream ended it.
    Completed,
    /// The client went away first (the relay was dropped unfinished).
    ClientClosed,
    /// The upstream failed: an error status before the first byte, or a broken body.
    UpstreamError,
    /// The upstream fell silent past its idle timeout.
    Timeout,
    /// The gateway's shutdown grace ran out.
    ShuttingDown,
}

impl StreamOutcome {
    /// The upstream failed the stream (trace spans mark it an error); a
    /// client leaving or the gateway's shutdown are not the call failing.
    pub fn is_error(self) -> bool {
        matches!(self, Self::UpstreamError | Self::Timeout)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::ClientClosed => "client_closed",
            Self::UpstreamError => "upstream_error",
            Self::Timeout => "timeout",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// Told when the relay is dropped, whichever way its stream ended: the relay
/// records its own ending where it already decides it (no per-chunk cost),
/// and a relay dropped unfinished means the client left. Carried on the
/// response so the access log can write a stream's line at its end, from
/// the relay's drop, with no task of its own.
#[derive(Clone, Default)]
pub struct StreamEnded(Arc<std::sync::Mutex<EndSlot>>);

/// What to do at the end, or how it ended if that came first.
#[derive(Default)]
enum EndSlot {
    #[default]
    Open,
    Waiting(Box<dyn FnOnce(StreamOutcome) + Send>),
    Ended(StreamOutcome),
}

impl StreamEnded {
    /// Runs `then` with the outcome when the stream ends (at once if it has).
    pub fn then(&self, then: impl FnOnce(StreamOutcome) + Send + 'static) {
        let Ok(mut slot) = self.0.lock() else { return };
        match std::mem::take(&mut *slot) {
            EndSlot::Ended(outcome) => {
                drop(slot);
                then(outcome);
            }
            _ => *slot = EndSlot::Waiting(Box::new(then)),
        }
    }

    pub(crate) fn tell(&self, outcome: StreamOutcome) {
        let Ok(mut slot) = self.0.lock() else { return };
        match std::mem::replace(&mut *slot, EndSlot::Ended(outcome)) {
            EndSlot::Waiting(then) => {
                drop(slot);
                then(outcome);
            }
            EndSlot::Open | EndSlot::Ended(_) => {}
        }
    }
}
