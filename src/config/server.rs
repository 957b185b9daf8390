//! `[server]`: the API listener, request and connection bounds, shutdown.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Deadline for an upstream answer to start (headers, or the whole body when not streaming).
    #[serde(with = "duration::serde_duration")]
    pub request_timeout: Duration,
    /// SSE comment interval while a stream waits for its first upstream byte.
    #[serde(with = "duration::serde_duration")]
    pub stream_keepalive: Duration,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    #[serde(with = "duration::serde_duration")]
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long `/readyz` answers 503 while every listener
    /// keeps serving (HTTP/1 answers carry `connection: close`), so a load
    /// balancer that polls readiness stops sending first and one that keeps
    /// connections opens new ones; then the listeners close and
    /// `shutdown_grace` begins. SIGINT skips it.
    #[serde(with = "duration::serde_duration")]
    pub drain_delay: Duration,
    /// Upstream calls in flight across the gateway; 0 means no limit. Others queue.
    pub max_concurrency: usize,
    /// Largest non-streamed upstream answer read into memory, in bytes; past it
    /// the call fails with a 502 instead of the gateway growing without bound.
    /// The default fits the largest real embeddings answer (2048 inputs of
    /// 3072 floats: 70 to 190 MB as JSON, by digits and indentation).
    pub max_response_bytes: usize,
    /// A connection must deliver a complete request head this soon after it
    /// opens or its next request's first byte (slowloris defence).
    #[serde(with = "duration::serde_duration")]
    pub header_read_timeout: Duration,
    /// Deadline for a proxied request's whole body, from its head; then 408.
    #[serde(with = "duration::serde_duration")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    #[serde(with = "duration::serde_duration")]
    pub idle_timeout: Duration,
    /// Client connections open at once, all listeners together; more are
    /// answered 503. 0 derives it from the open-file limit.
    pub max_connections: usize,
    /// Browser origins allowed to call the API (`["*"]`: any); empty, the
    /// default, sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Reload when the config file's content changes (checked every second);
    /// SIGHUP and `POST /admin/reload` work either way.
    pub watch_config: bool,
    /// How connections are run (read at start; a reload keeps it).
    pub runtime: RuntimeModel,
    /// Threads serving connections; 0, the default, means one per core.
    pub workers: usize,
}

/// How connections are spread over threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeModel {
    /// Each connection stays on one worker thread with its own upstream
    /// pool, as nginx's workers do: no hops between threads per call.
    #[default]
    PerCore,
    /// One work-stealing pool: an idle thread takes over work from a busy
    /// one, for loads of a few connections with very uneven calls.
    Shared,
}

impl RuntimeModel {
    /// As the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PerCore => "per_core",
            Self::Shared => "shared",
        }
    }
}

impl ServerConfig {
    /// The worker threads to run: `workers`, or one per core.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            workers => workers,
        }
    }

    /// The upstream connection pools to keep: one per worker thread when
    /// each connection stays on its thread, one shared otherwise.
    pub fn upstream_pools(&self) -> usize {
        match self.runtime {
            RuntimeModel::PerCore => self.worker_threads(),
            RuntimeModel::Shared => 1,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(600),
            stream_keepalive: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::from_secs(1),
            max_concurrency: 0,
            max_response_bytes: 256 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 0,
            cors_origins: Vec::new(),
            watch_config: true,
            runtime: RuntimeModel::PerCore,
            workers: 0,
        }
    }
}
