//! W3C Trace Context: trace and span ids, the `traceparent` header read by
//! its grammar and written back, and `tracestate` passed on bounded.

use http::HeaderValue;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceId(pub [u8; 16]);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Random and never all zeros (an invalid id).
    pub fn random() -> Self {
        Self(fastrand::u128(1..).to_be_bytes())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl SpanId {
    pub fn random() -> Self {
        Self(fastrand::u64(1..).to_be_bytes())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

/// The longest `tracestate` passed on: the specification asks for at
/// least 512 characters, and a longer one is cut at a member boundary.
const MAX_TRACE_STATE: usize = 512;

/// A span as another process names it: what `traceparent` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged (bounded).
    pub trace_state: Option<HeaderValue>,
}

impl SpanContext {
    /// `traceparent`'s value for this span: version 00.
    pub fn traceparent(&self) -> HeaderValue {
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_bytes(&self.traceparent_bytes()).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000000-0000000000000000-00",
        ))
    }

    /// The same, as text to store (a queued job's link to its creator).
    pub fn traceparent_text(&self) -> String {
        self.traceparent_bytes()
            .iter()
            .map(|&b| char::from(b))
            .collect()
    }

    fn traceparent_bytes(&self) -> [u8; 55] {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id.0, &mut text[3..35]);
        text[35] = b'-';
        hex_into(&self.span_id.0, &mut text[36..52]);
        text[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        text
    }
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// The caller's span from its `traceparent` and `tracestate` headers;
/// `None` when `traceparent` is absent or breaks the grammar (then a new
/// trace starts and `tracestate` is dropped with it, as the specification
/// says).
pub fn remote_parent(headers: &http::HeaderMap) -> Option<SpanContext> {
    let mut values = headers.get_all("traceparent").iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (trace_id, span_id, flags) = parse_traceparent(first.as_bytes())?;
    Some(SpanContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        trace_state: trace_state(headers),
    })
}

/// `version "-" trace-id "-" parent-id "-" trace-flags`, lower-case hex.
/// Version ff is invalid; a later version than 00 is read for its first
/// four fields, and may carry more after a dash.
pub fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, u8)> {
    let value = value.trim_ascii();
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[..2])?;
    let longer_allowed = version != 0 && value.get(55).is_none_or(|&c| c == b'-');
    if version == 0xff || (value.len() != 55 && !longer_allowed) {
        return None;
    }
    let mut trace = [0u8; 16];
    for (i, byte) in trace.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span = [0u8; 8];
    for (i, byte) in span.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some((TraceId(trace), SpanId(span), flags))
}

/// Two lower-case hex digits.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

/// Every `tracestate` header joined with commas (they are one list). A
/// list with a member that breaks the grammar is not passed on at all, as
/// the specification asks; a long one is cut from the right: at 32
/// members, or where the next member would pass `MAX_TRACE_STATE`.
fn trace_state(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let mut joined = String::new();
    let mut members = 0;
    'headers: for value in headers.get_all("tracestate") {
        let text = value.to_str().ok()?;
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if !is_member(member) {
                return None;
            }
            members += 1;
            if members > 32 || joined.len() + member.len() + 1 > MAX_TRACE_STATE {
                break 'headers;
            }
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(member);
        }
    }
    (!joined.is_empty())
        .then(|| HeaderValue::from_str(&joined).ok())
        .flatten()
}

/// `key=value`: a key of lower-case letters, digits and `_-*/@` starting
/// with a letter or digit, a value of printable ASCII without `,` or `=`
/// not ending in a space; each at most 256 characters.
fn is_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    let key_ok = key.len() <= 256
        && key
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && key
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/@".contains(&c));
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=');
    key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_specification_example() {
        let (trace, span, flags) = parse_traceparent(VALID.as_bytes()).unwrap();
        assert_eq!(trace.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.to_hex(), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
        let context = SpanContext {
            trace_id: trace,
            span_id: span,
            sampled: true,
            trace_state: None,
        };
        assert_eq!(context.traceparent(), VALID);
        assert_eq!(context.traceparent_text(), VALID);
    }

    #[test]
    fn refuses_what_the_grammar_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_known_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert!(parse_traceparent(later.as_bytes()).is_some());
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00extra";
        assert!(parse_traceparent(glued.as_bytes()).is_none());
    }

    #[test]
    fn tracestate_headers_join_and_stay_bounded() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(VALID));
        headers.append("tracestate", HeaderValue::from_static("a=1, b=2"));
        headers.append("tracestate", HeaderValue::from_static("c=3"));
        let parent = remote_parent(&headers).unwrap();
        assert_eq!(parent.trace_state.unwrap(), "a=1,b=2,c=3");
        let members: Vec<String> = (0..40)
            .map(|i| format!("k{i}={}", "v".repeat(20)))
            .collect();
        headers.insert(
            "tracestate",
            HeaderValue::from_str(&members.join(",")).unwrap(),
        );
        let cut = remote_parent(&headers).unwrap().trace_state.unwrap();
        let kept: Vec<&str> = cut.to_str().unwrap().split(',').collect();
        assert!(cut.len() <= 512 && kept == members[..kept.len()], "{cut:?}");
        headers.insert("tracestate", HeaderValue::from_static("a=1,Bad=2"));
        assert_eq!(
            remote_parent(&headers).unwrap().trace_state,
            None,
            "invalid: dropped"
        );
        headers.insert("tracestate", HeaderValue::from_static("a=1,b"));
        assert_eq!(remote_parent(&headers).unwrap().trace_state, None);
        headers.append("traceparent", HeaderValue::from_static(VALID));
        assert!(remote_parent(&headers).is_none(), "two traceparents");
    }
}
