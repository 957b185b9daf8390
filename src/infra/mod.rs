//! Infrastructure the engines and the server build on: logging and
//! metrics, OpenTelemetry traces, the pooled HTTP client, the shared Redis
//! and SQL stores, the SSE grammar, the local data directories, the
//! synchronous layer helper, and the worker threads connections run on.

pub mod http_pool;
pub mod log_lines;
pub mod metrics;
pub mod otel;
pub mod redis;
pub mod sql;
pub mod sse;
pub mod storage_dirs;
pub mod sync_layer;
pub mod telemetry;
pub mod workers;

/// The process-wide handles an engine built from config is given: the
/// metrics, the owner of its background tasks, and the shared Redis when
/// `[redis]` is set.
#[derive(Clone)]
pub struct Shared {
    pub metrics: metrics::Metrics,
    pub tasks: crate::util::tasks::Tasks,
    pub redis: Option<redis::SharedRedis>,
}
