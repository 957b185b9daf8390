//! Log output: text or JSON lines, filtered by `RUST_LOG` or `[log] level`.
//!
//! Lines are formatted on the thread that logs them and written by a thread
//! of their own: a call hands its access line to a bounded queue instead of
//! taking stderr's lock and making a `write` of its own, and the writer
//! sends whatever has queued up in one `write`. When the queue is full the
//! caller waits (as it waited on stderr before), so no line is dropped.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines formatted but not yet written, at most.
const QUEUED_LINES: usize = 64 * 1024;
/// What the writer gathers before a `write`, at most.
const WRITE_BUFFER: usize = 64 * 1024;

/// The log's writer thread: dropping it writes what is queued, so `main`
/// holds it until the gateway has stopped.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[expect(dead_code, reason = "held for its drop")] WorkerGuard);

pub fn init(log: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("sluice-log")
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes are noise in a file or a log collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests building several gateways) is harmless: ignore it.
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    LogGuard(guard)
}

/// Lets a repeated warning through at most once per interval, across
/// threads, without a lock; the caller still counts every occurrence in a
/// metric. The first occurrence is always logged.
pub struct LogEvery {
    every_ms: u64,
    started: std::time::Instant,
    /// Milliseconds since `started`, plus one, of the last line; 0 = none yet.
    last: std::sync::atomic::AtomicU64,
}

impl LogEvery {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            started: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// For a failing store (Redis, PostgreSQL, SQLite): every failure is
    /// counted in a metric, one line per 10 s is logged.
    pub fn store_failures() -> Self {
        Self::new(std::time::Duration::from_secs(10))
    }

    /// Whether to log this occurrence.
    pub fn due(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Relaxed);
        (last == 0 || now >= last + self.every_ms)
            && self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::LogEvery;

    #[test]
    fn the_first_occurrence_logs_then_one_per_interval() {
        let log = LogEvery::new(std::time::Duration::from_secs(3600));
        assert!(log.due());
        assert!(!log.due());
        assert!(!log.due());
    }
}
