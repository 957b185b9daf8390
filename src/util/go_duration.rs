//! Durations as OpenAI spells them in rate-limit reset headers and in the
//! "try again in" of its errors (Go style). A leaf: errors and limits use it
//! without depending on the config.

use std::time::Duration;

/// Formats like Go's `time.Duration.String()` as OpenAI's reset headers do:
/// `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn format_go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let hours = millis / 3_600_000;
    let minutes = (millis / 60_000) % 60;
    let seconds = (millis % 60_000) as f64 / 1000.0;
    let seconds = format!("{seconds}");
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_openai_headers() {
        assert_eq!(format_go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(format_go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_go_duration(Duration::from_secs(3723)), "1h2m3s");
    }
}
