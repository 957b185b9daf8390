//! Load from wrk (Debian's `wrk`, installed by `scripts/bench-deps.sh`), a
//! process of its own on the same machine, as the peers' published figures
//! use: the bench's own process then holds only what is measured.
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::panic,
    reason = "shared by benches; a bench stops at a broken setup"
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkStats {
    pub rps: f64,
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One load: `connections` keep-alive connections sending `body` to `url`
/// with `headers` for `duration`.
pub struct Load<'a> {
    pub url: &'a str,
    pub body: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub connections: usize,
    pub duration: Duration,
}

/// `None` when wrk is not installed.
pub fn installed() -> Option<&'static str> {
    ["/usr/bin/wrk", "/usr/local/bin/wrk"]
        .into_iter()
        .find(|path| Path::new(path).exists())
}

/// Runs wrk once; panics when a response was not a 2xx or a socket failed,
/// since a figure with errors in it compares nothing.
pub fn run(wrk: &str, dir: &Path, load: &Load) -> WrkStats {
    let script = dir.join(format!("wrk-{}.lua", fastrand::u64(..)));
    let mut lua = format!("wrk.method = \"POST\"\nwrk.body = [[{}]]\n", load.body);
    for (name, value) in load.headers {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    std::fs::write(&script, lua).expect("wrk script");
    let threads = load.connections.clamp(1, 2);
    let output = Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", load.connections))
        // wrk takes whole seconds.
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(load.url)
        .output()
        .expect("wrk");
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors on {}:\n{text}",
        load.url
    );
    parse(&text).unwrap_or_else(|| panic!("cannot read wrk's output:\n{text}"))
}

/// Reads `Requests/sec`, the request count and the 50% and 99% latencies.
fn parse(text: &str) -> Option<WrkStats> {
    let mut stats = WrkStats::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(value)) => stats.rps = value.parse().ok()?,
            (Some("50%"), Some(value)) => stats.p50_us = micros(value)?,
            (Some("99%"), Some(value)) => stats.p99_us = micros(value)?,
            (Some(count), Some("requests")) => stats.requests = count.parse().ok()?,
            _ => {}
        }
    }
    (stats.rps > 0.0).then_some(stats)
}

/// `45.00us`, `1.23ms`, `2.00s` in microseconds.
fn micros(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number,
        "ms" => number * 1e3,
        "s" => number * 1e6,
        "m" => number * 60e6,
        _ => return None,
    })
}
