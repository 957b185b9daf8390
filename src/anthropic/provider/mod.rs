//! Anthropic as a provider: an OpenAI-shaped chat call written as a
//! Messages request (`request`), and Anthropic's answer written back as a
//! chat completion, whole (`response`) or chunk by chunk (`stream`), its
//! headers and status in the terms the rest of the gateway reads.

mod request;
mod response;
mod stream;

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, StatusCode};

pub use request::{DEFAULT_MAX_TOKENS, to_messages};
pub use response::{to_completion, to_openai_error};
pub use stream::ChunkTranslator;

/// The API version sent on every call.
pub const VERSION: &str = "2023-06-01";

/// Anthropic's rate-limit headers under OpenAI's names, so the deployment's
/// health reads them (`x-ratelimit-remaining-*`, `x-ratelimit-reset-*`): a
/// reported zero takes the deployment out until its reset, before it
/// answers 429. Of the token counts, the lowest; of their resets, the
/// latest (every token limit must have room again).
pub fn map_headers(headers: &mut HeaderMap, now: SystemTime) {
    let read =
        |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let requests = read("anthropic-ratelimit-requests-remaining");
    let tokens = [
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
    ]
    .into_iter()
    .filter_map(read)
    .min();
    let reset = |names: &[&str]| {
        names
            .iter()
            .filter_map(|name| headers.get(*name)?.to_str().ok())
            .filter_map(|text| until(text, now))
            .max()
            .map(|ms| format!("{ms}ms"))
    };
    let requests_reset = reset(&["anthropic-ratelimit-requests-reset"]);
    let tokens_reset = reset(&[
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    ]);
    for (name, value) in [
        (
            "x-ratelimit-remaining-requests",
            requests.map(|n| n.to_string()),
        ),
        (
            "x-ratelimit-remaining-tokens",
            tokens.map(|n| n.to_string()),
        ),
        ("x-ratelimit-reset-requests", requests_reset),
        ("x-ratelimit-reset-tokens", tokens_reset),
    ] {
        if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Milliseconds from `now` to an RFC 3339 UTC time (`2026-12-07T13:00:05Z`,
/// fractions allowed), 0 when it is past; `None` when it does not read.
fn until(text: &str, now: SystemTime) -> Option<u64> {
    let at_ms = rfc3339_ms(text.trim())?;
    let now_ms = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(at_ms.saturating_sub(now_ms).max(0) as u64)
}

fn rfc3339_ms(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock = clock.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    let millis: i64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    valid.then(|| {
        let seconds =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
        seconds * 1000 + millis
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Anthropic's 529 `overloaded_error` is push-back, as OpenAI's 503 is.
pub fn map_status(status: StatusCode) -> StatusCode {
    match status.as_u16() {
        529 => StatusCode::SERVICE_UNAVAILABLE,
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_headers_and_overload_read_as_openais() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            "12".parse().unwrap(),
        );
        headers.insert(
            "anthropic-ratelimit-input-tokens-remaining",
            "900".parse().unwrap(),
        );
        headers.insert(
            "anthropic-ratelimit-output-tokens-remaining",
            "40".parse().unwrap(),
        );
        headers.insert(
            "anthropic-ratelimit-requests-reset",
            "2026-12-07T13:00:30Z".parse().unwrap(),
        );
        headers.insert(
            "anthropic-ratelimit-input-tokens-reset",
            "2026-12-07T13:00:10.5Z".parse().unwrap(),
        );
        headers.insert(
            "anthropic-ratelimit-output-tokens-reset",
            "2026-12-07T13:01:00Z".parse().unwrap(),
        );
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_648_400);
        map_headers(&mut headers, now);
        assert_eq!(headers["x-ratelimit-remaining-requests"], "12");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "40");
        assert_eq!(headers["x-ratelimit-reset-requests"], "30000ms");
        assert_eq!(headers["x-ratelimit-reset-tokens"], "60000ms");
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.25Z"), Some(1250));
        assert_eq!(rfc3339_ms("2026-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("yesterday"), None);
        assert_eq!(
            map_status(StatusCode::from_u16(529).unwrap()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            map_status(StatusCode::TOO_MANY_REQUESTS),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
