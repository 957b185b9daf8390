//! Log output: text or JSON lines, filtered by `RUST_LOG` or `[log] level`.
//!
//! Lines are formatted on the thread that logs them and written by it when
//! it goes idle, many lines per `write` (`infra::log_lines`).

use tracing_subscriber::EnvFilter;

use super::log_lines::{Lines, flush_now};
use crate::config::{LogConfig, LogFormat};

pub use super::log_lines::flush_pending;

/// The log: dropping it writes the lines the calling thread still holds,
/// so `main` holds it until the gateway has stopped (its workers write
/// theirs as they stop).
#[must_use = "dropping the guard writes the main thread's pending lines"]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush_now();
    }
}

pub fn init(log: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Lines)
        // Colour codes are noise in a file or a log collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests building several gateways) is harmless: ignore it.
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    LogGuard(())
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
