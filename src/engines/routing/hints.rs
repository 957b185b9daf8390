//! When an upstream says to come back: `retry-after-ms` (float milliseconds,
//! also Azure's `x-ms-retry-after-ms`), else `retry-after` (seconds or an HTTP
//! date), else `x-ratelimit-reset-requests` / `-tokens` (Go-style durations
//! such as `6m0s`). `-1` and unparsable values mean "unknown".

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::config::{MAX_DURATION, from_secs, parse_duration};

/// The upstream's own hint, if it gave one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let millis = |value: &str| from_secs(value.parse::<f64>().ok()? / 1000.0);
    if let Some(hint) = text("retry-after-ms").and_then(millis) {
        return Some(hint);
    }
    if let Some(hint) = text("x-ms-retry-after-ms").and_then(millis) {
        return Some(hint);
    }
    if let Some(value) = text("retry-after") {
        if let Ok(seconds) = value.parse::<f64>() {
            if let Some(hint) = from_secs(seconds) {
                return Some(hint);
            }
        } else if let Ok(date) = httpdate::parse_http_date(value) {
            let wait = date.duration_since(SystemTime::now()).unwrap_or_default();
            return Some(wait.min(MAX_DURATION));
        }
    }
    reset_hint(headers)
}

/// The later of the two reset headers: both limits must have room again.
pub fn reset_hint(headers: &HeaderMap) -> Option<Duration> {
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .filter_map(parse_duration)
        .max()
}

/// `x-ratelimit-remaining-requests` / `-tokens`: `None` when absent or `-1`.
pub fn remaining(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn each_hint_format() {
        let hint = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs));
        assert_eq!(
            hint(&[("retry-after-ms", "1500.5")]),
            Some(Duration::from_micros(1_500_500))
        );
        assert_eq!(
            hint(&[("x-ms-retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(hint(&[("retry-after", "5")]), Some(Duration::from_secs(5)));
        assert_eq!(
            hint(&[("retry-after", "0.5")]),
            Some(Duration::from_millis(500))
        );
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let from_date = hint(&[("retry-after", &in_a_minute)]).unwrap();
        assert!(
            from_date > Duration::from_secs(55) && from_date <= Duration::from_secs(61),
            "{from_date:?}"
        );
        assert_eq!(
            hint(&[("x-ratelimit-reset-requests", "6m0s")]),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            hint(&[
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "20ms")
            ]),
            Some(Duration::from_secs(1))
        );
        // Precedence: milliseconds first, then retry-after, then resets.
        assert_eq!(
            hint(&[
                ("retry-after", "9"),
                ("retry-after-ms", "100"),
                ("x-ratelimit-reset-requests", "1m")
            ]),
            Some(Duration::from_millis(100))
        );
        // Azure's -1 means unknown, and so does garbage.
        assert_eq!(
            hint(&[("retry-after-ms", "-1"), ("x-ratelimit-reset-tokens", "-1")]),
            None
        );
        assert_eq!(hint(&[("retry-after", "soon")]), None);
        // Too large to add to an instant: unknown, not a panic.
        assert_eq!(hint(&[("retry-after", "1e300")]), None);
        assert_eq!(hint(&[("retry-after-ms", "1e300")]), None);
        assert_eq!(hint(&[("retry-after", "NaN")]), None);
        assert_eq!(hint(&[]), None);
    }

    #[test]
    fn remaining_ignores_unknown() {
        let map = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "-1"),
        ]);
        assert_eq!(remaining(&map, "x-ratelimit-remaining-requests"), Some(0));
        assert_eq!(remaining(&map, "x-ratelimit-remaining-tokens"), None);
    }
}
