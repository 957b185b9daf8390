//! `[server] max_connections`: open connections are counted (and shown as
//! `sluice_connections`); one past the cap is answered 503 and closed, so a
//! client flood meets a clear refusal instead of exhausting descriptors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use prometheus::IntGauge;

use crate::infra::telemetry::LogEvery;
use crate::vocab::error::GatewayError;

/// Connections being answered 503 at once; past this a connection is closed
/// at accept, so shedding itself stays bounded.
pub const MAX_SHEDDING: usize = 256;

/// Longest a shed connection may take to send its request head and read the 503.
pub const SHED_DEADLINE: Duration = Duration::from_secs(2);

pub struct Capacity {
    open: AtomicUsize,
    max: usize,
    shedding: AtomicUsize,
    gauge: IntGauge,
    log: LogEvery,
}

impl Capacity {
    pub fn new(max: usize, gauge: IntGauge) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            shedding: AtomicUsize::new(0),
            gauge,
            log: LogEvery::new(Duration::from_secs(10)),
        })
    }

    /// A slot for a served connection, or `Err` with a slot to shed it
    /// (`None`: too many are being shed already; close it at once).
    pub fn admit(self: &Arc<Self>) -> Result<Open, Option<Shedding>> {
        if self.open.fetch_add(1, Relaxed) < self.max {
            self.gauge.inc();
            return Ok(Open(self.clone()));
        }
        self.open.fetch_sub(1, Relaxed);
        if self.log.due() {
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached; answering new connections 503"
            );
        }
        if self.shedding.fetch_add(1, Relaxed) < MAX_SHEDDING {
            return Err(Some(Shedding(self.clone())));
        }
        self.shedding.fetch_sub(1, Relaxed);
        Err(None)
    }

    /// The answer to a connection past the cap.
    pub fn refusal(&self) -> Response {
        let mut response = GatewayError::Overloaded {
            what: format!("client connections ({} open)", self.max),
            retry_after: Duration::from_secs(1),
        }
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// A served connection's slot.
pub struct Open(Arc<Capacity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.gauge.dec();
    }
}

/// A shed connection's slot.
pub struct Shedding(Arc<Capacity>);

impl Drop for Shedding {
    fn drop(&mut self) {
        self.0.shedding.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_then_sheds_and_frees_on_drop() {
        let gauge = IntGauge::new("test_connections", "test").unwrap();
        let capacity = Capacity::new(2, gauge.clone());
        let first = capacity.admit().ok().unwrap();
        let _second = capacity.admit().ok().unwrap();
        assert_eq!(gauge.get(), 2);
        assert!(matches!(capacity.admit(), Err(Some(_))));
        drop(first);
        assert_eq!(gauge.get(), 1);
        assert!(capacity.admit().is_ok());
    }
}
