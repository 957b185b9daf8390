//! Top-level members of a JSON object, found by walking its text: strings
//! (escapes included) and nested values are skipped, any whitespace is
//! accepted, nothing is allocated and nothing re-serialised. Used to decide
//! what a stream event says and to cut one member out of it, leaving every
//! other byte as the upstream wrote it. Text that is not an object, or
//! breaks off before the member, yields `None`.

use std::ops::Range;

/// Where a member is in the text.
#[derive(Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's value.
    pub value: Range<usize>,
    /// What to cut to remove the member: it and one separating comma.
    pub removal: Range<usize>,
}

/// The first top-level member named `key` (compared as written: a key
/// spelled with escapes is not recognised).
pub fn member(doc: &[u8], key: &[u8]) -> Option<Member> {
    let mut at = skip_space(doc, 0);
    if doc.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(doc, at + 1);
    if doc.get(at) == Some(&b'}') {
        return None;
    }
    let mut comma_before = None;
    loop {
        let start = at;
        let key_end = string_end(doc, start)?;
        at = skip_space(doc, key_end);
        if doc.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_space(doc, at + 1);
        let value_end = value_end(doc, value_start)?;
        at = skip_space(doc, value_end);
        let comma_after = (doc.get(at) == Some(&b',')).then_some(at);
        if &doc[start + 1..key_end - 1] == key {
            let removal = match (comma_after, comma_before) {
                (Some(comma), _) => start..skip_space(doc, comma + 1),
                (None, Some(comma)) => comma..value_end,
                (None, None) => start..value_end,
            };
            return Some(Member {
                value: value_start..value_end,
                removal,
            });
        }
        comma_before = Some(comma_after?);
        at = skip_space(doc, at + 1);
    }
}

/// `doc` without `member`.
pub fn without(doc: &[u8], member: &Member) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len());
    out.extend_from_slice(&doc[..member.removal.start]);
    out.extend_from_slice(&doc[member.removal.end..]);
    out
}

/// Whether `value` is an empty array (`[]`, with any whitespace inside).
pub fn is_empty_array(value: &[u8]) -> bool {
    value.first() == Some(&b'[') && skip_space(value, 1) == value.len() - 1
}

fn skip_space(doc: &[u8], mut at: usize) -> usize {
    while matches!(doc.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the string that starts at `at`.
fn string_end(doc: &[u8], at: usize) -> Option<usize> {
    if doc.get(at) != Some(&b'"') {
        return None;
    }
    let mut at = at + 1;
    loop {
        at += memchr::memchr2(b'"', b'\\', doc.get(at..)?)?;
        match doc[at] {
            b'\\' => at += 2,
            _ => return Some(at + 1),
        }
    }
}

/// Just past the value that starts at `at`.
fn value_end(doc: &[u8], at: usize) -> Option<usize> {
    match doc.get(at)? {
        b'"' => string_end(doc, at),
        b'{' | b'[' => container_end(doc, at),
        _ => {
            let len = doc[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(doc.len() - at);
            (len > 0).then_some(at + len)
        }
    }
}

/// Just past the object or array that starts at `at`; depth is a counter,
/// so nesting costs no stack.
fn container_end(doc: &[u8], mut at: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match doc.get(at)? {
            b'"' => {
                at = string_end(doc, at)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(doc: &str, key: &str) -> Option<String> {
        let found = member(doc.as_bytes(), key.as_bytes())?;
        Some(String::from_utf8(without(doc.as_bytes(), &found)).unwrap())
    }

    #[test]
    fn removes_a_member_in_any_position_and_spelling() {
        assert_eq!(
            cut(r#"{"a":1,"usage":null}"#, "usage").unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(
            cut(r#"{"usage":null,"a":1}"#, "usage").unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(
            cut(r#"{"a":1,"usage":null,"b":2}"#, "usage").unwrap(),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(
            cut(r#"{"a": 1, "usage": null}"#, "usage").unwrap(),
            r#"{"a": 1}"#
        );
        assert_eq!(
            cut(r#"{"usage" : null , "a": 1}"#, "usage").unwrap(),
            r#"{"a": 1}"#
        );
        assert_eq!(
            cut("{\n  \"usage\":\n null\n}", "usage").unwrap(),
            "{\n  \n}"
        );
        let parsed: serde_json::Value = serde_json::from_str(
            &cut("{\"a\": [1, {\"b\": \"}\"}],\n\"usage\": null}", "usage").unwrap(),
        )
        .unwrap();
        assert_eq!(parsed, serde_json::json!({"a": [1, {"b": "}"}]}));
    }

    #[test]
    fn only_top_level_keys_count_and_strings_are_skipped() {
        let doc = br#"{"x":"\"usage\":null","n":{"usage":null},"usage":{"total_tokens":3}}"#;
        let found = member(doc, b"usage").unwrap();
        assert_eq!(&doc[found.value], br#"{"total_tokens":3}"#);
        assert_eq!(member(br#"{"n":{"usage":null}}"#, b"usage"), None);
        assert_eq!(
            member(br#"{"a":"\\","usage":1}"#, b"usage").map(|m| m.value),
            Some(18..19)
        );
    }

    #[test]
    fn broken_text_is_not_an_object() {
        for doc in [
            &b""[..],
            b"[DONE]",
            b"{",
            b"{\"a\"",
            b"{\"a\":",
            b"{\"a\":\"x",
            b"{\"a\":[1",
            b"{\"a\":1 \"usage\":null}",
            b"{}",
        ] {
            assert_eq!(
                member(doc, b"usage"),
                None,
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn empty_arrays_in_any_whitespace() {
        assert!(is_empty_array(b"[]"));
        assert!(is_empty_array(b"[ \n ]"));
        assert!(!is_empty_array(b"[1]"));
        assert!(!is_empty_array(b"null"));
        assert!(!is_empty_array(b""));
    }
}
