//! Log output: text or JSON lines, filtered by `RUST_LOG` or `[log] level`.
//!
//! Lines are formatted on the thread that logs them and written by it when
//! it goes idle, many lines per `write` (`infra::log_lines`).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

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
    let (targets, dynamic) = filter(log);
    let lines = fmt::layer()
        .with_writer(Lines)
        // Colour codes are noise in a file or a log collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(targets).with(dynamic);
    // A second init (tests building several gateways) is harmless: ignore it.
    let _ = match log.format {
        LogFormat::Json => registry.with(lines.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(lines).try_init(),
    };
    LogGuard(())
}

/// The filter of `RUST_LOG`, else of `[log] level`, else `info`: one of the
/// two. Targets and levels alone (`info`, `sluice=debug,hyper=warn`) make a
/// static `Targets` filter. `EnvFilter` is kept for what only it reads
/// (span and field filters, `[...]`): it takes a process-wide lock on every
/// span entered and left, which every call does several times.
fn filter(log: &LogConfig) -> Filters {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    [from_env.as_deref(), Some(&log.level)]
        .into_iter()
        .flatten()
        .find_map(|text| parse_filter(text).ok())
        .unwrap_or_else(|| {
            (
                Some(Targets::new().with_default(tracing::Level::INFO)),
                None,
            )
        })
}

/// Exactly one of the two is set.
type Filters = (Option<Targets>, Option<EnvFilter>);

fn parse_filter(text: &str) -> Result<Filters, String> {
    if !text.contains('[')
        && let Ok(targets) = text.parse::<Targets>()
    {
        return Ok((Some(targets), None));
    }
    EnvFilter::try_new(text)
        .map(|filter| (None, Some(filter)))
        .map_err(|error| error.to_string())
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
    use super::{LogEvery, parse_filter};

    #[test]
    fn targets_and_levels_make_a_static_filter_and_span_filters_an_env_filter() {
        for text in [
            "info",
            "warn,sluice=debug",
            "sluice::access=off,info",
            "sluice",
        ] {
            assert!(matches!(parse_filter(text), Ok((Some(_), None))), "{text}");
        }
        for text in ["sluice[call]=debug", "info,sluice[call{key=\"a\"}]=trace"] {
            assert!(matches!(parse_filter(text), Ok((None, Some(_)))), "{text}");
        }
        assert!(parse_filter("sluice=loud").is_err());
    }

    #[test]
    fn a_static_filter_reads_levels_and_targets_as_the_env_filter_does() {
        use tracing::Level;
        use tracing_subscriber::filter::Targets;
        let targets: Targets = "warn,sluice=debug,sluice::access=off".parse().unwrap();
        assert!(targets.would_enable("sluice::dispatch", &Level::DEBUG));
        assert!(!targets.would_enable("sluice::access", &Level::ERROR));
        assert!(!targets.would_enable("hyper", &Level::INFO));
        assert!(targets.would_enable("hyper", &Level::WARN));
    }

    #[test]
    fn the_first_occurrence_logs_then_one_per_interval() {
        let log = LogEvery::new(std::time::Duration::from_secs(3600));
        assert!(log.due());
        assert!(!log.due());
        assert!(!log.due());
    }
}
