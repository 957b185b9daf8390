//! Durations as written in config (`250ms`, `30s`, `1m30s`, or a bare number of
//! seconds).

use std::time::Duration;

/// The longest duration accepted anywhere (a century). Longer values are
/// typos or hostile, and overflow what durations feed: `Instant + d` panics
/// near `u64::MAX` seconds, and TTLs are kept as `u64` milliseconds.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `seconds` as a duration, if it is finite, not negative and at most
/// `MAX_DURATION`.
pub fn from_secs(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| *duration <= MAX_DURATION)
}

/// Parses Go-style durations: one or more `<number><unit>` parts, units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, `d`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return from_secs(seconds);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    from_secs(total)
}

pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(seconds) => super::from_secs(seconds)
                .ok_or_else(|| D::Error::custom(format!("invalid duration {seconds}"))),
            Raw::Text(text) => super::parse_duration(&text).ok_or_else(|| {
                D::Error::custom(format!(
                    "invalid duration `{text}` (use e.g. `250ms`, `30s`, `1m30s`)"
                ))
            }),
        }
    }
}

/// A duration in the same forms, inside another shape (an option, a map).
#[derive(serde::Deserialize)]
struct Wrapped(#[serde(with = "serde_duration")] Duration);

pub mod serde_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    use super::Wrapped;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(d)| d))
    }
}

/// A map of durations, e.g. `{ batch = "10m", realtime = 5 }`.
pub mod serde_map {
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    use super::Wrapped;

    pub fn deserialize<'de, D, K>(deserializer: D) -> Result<HashMap<K, Duration>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Eq + Hash,
    {
        let map = HashMap::<K, Wrapped>::deserialize(deserializer)?;
        Ok(map.into_iter().map(|(k, Wrapped(d))| (k, d)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_and_bare_forms() {
        assert_eq!(parse_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn refuses_what_would_overflow_an_instant() {
        for text in [
            "18000000000000000000",
            "1e300",
            "inf",
            "NaN",
            "5000000000000000h",
        ] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
        assert_eq!(parse_duration("876000h"), Some(MAX_DURATION));
        assert!(
            std::time::Instant::now()
                .checked_add(MAX_DURATION)
                .is_some()
        );
    }
}
