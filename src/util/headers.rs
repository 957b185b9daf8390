//! Header values that come from outside the gateway (a client or an
//! upstream) and that it logs, records, echoes or forwards. Each is taken
//! only when short and printable, so no header can make a log line, a ledger
//! row or another service's request unboundedly long or break its format.

use http::{HeaderName, HeaderValue};

/// The request id Sluice logs, records, sends upstream and answers with.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The upstream's own request id, passed on under this name (support cases
/// with a provider need it); the response's `x-request-id` stays Sluice's.
pub const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// A free-form feature tag for the ledger (`x-sluice-tag`).
pub const X_SLUICE_TAG: HeaderName = HeaderName::from_static("x-sluice-tag");

/// The longest id or tag accepted from outside.
pub const MAX_TOKEN_LEN: usize = 128;

/// An id: 1 to `MAX_TOKEN_LEN` visible ASCII characters (no spaces).
/// Whether an answer is an event stream (`text/event-stream`, with any
/// parameters).
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"text/event-stream"))
}

pub fn is_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_TOKEN_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
}

/// A tag: like an id, but inner spaces are allowed (`team a / nightly`).
pub fn tag(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    let text = std::str::from_utf8(bytes).ok()?.trim();
    (printable && (1..=MAX_TOKEN_LEN).contains(&text.len())).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_visible_ascii() {
        let value = |text: &str| HeaderValue::from_str(text).unwrap();
        assert!(is_id(&value("req_0123abc-XYZ")));
        assert!(is_id(&value(&"a".repeat(MAX_TOKEN_LEN))));
        assert!(!is_id(&value(&"a".repeat(MAX_TOKEN_LEN + 1))));
        assert!(!is_id(&value("has space")));
        assert!(!is_id(&value("")));
        assert!(!is_id(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
    }

    #[test]
    fn tags_may_have_inner_spaces_but_stay_short() {
        let value = |text: &str| HeaderValue::from_str(text).unwrap();
        assert_eq!(tag(&value(" nightly eval ")), Some("nightly eval"));
        assert_eq!(tag(&value(&"t".repeat(60_000))), None);
        assert_eq!(tag(&value("\t")), None);
        assert_eq!(tag(&HeaderValue::from_bytes(b"\xff").unwrap()), None);
    }
}
