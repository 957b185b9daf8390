//! One event's fields, read by the grammar: `data` lines joined with `\n`,
//! one optional space after the colon, comments and unknown fields ignored.

use std::borrow::Cow;

/// The fields of one event that decisions are made on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field (empty when absent: a `message`).
    pub name: &'a [u8],
    /// The `data:` lines joined with `\n`. Borrowed when there is one line,
    /// the usual case, so reading an event copies nothing.
    pub data: Cow<'a, [u8]>,
    /// Whether any `data:` line was present (a client dispatches only then).
    pub has_data: bool,
}

impl<'a> Event<'a> {
    /// Reads a whole event (as `Splitter` hands it on).
    pub fn parse(raw: &'a [u8]) -> Self {
        let mut event = Event::default();
        for (line, _) in lines(raw) {
            match field(line) {
                Some((b"data", value)) if event.has_data => {
                    let data = event.data.to_mut();
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                Some((b"data", value)) => {
                    event.data = Cow::Borrowed(value);
                    event.has_data = true;
                }
                Some((b"event", value)) => event.name = value,
                _ => {}
            }
        }
        event
    }

    /// Whether the data is `[DONE]`, the end of a chat or completions stream.
    pub fn is_done(&self) -> bool {
        self.has_data && self.data.trim_ascii() == b"[DONE]"
    }
}

/// A field's name and value, `None` for a comment.
fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if line.first() == Some(&b':') {
        return None;
    }
    Some(match memchr::memchr(b':', line) {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    })
}

/// The lines of `raw`, each without and with its line end.
fn lines(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (content_len, line_len) = match memchr::memchr2(b'\n', b'\r', rest) {
            None => (rest.len(), rest.len()),
            Some(at) if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') => (at, at + 2),
            Some(at) => (at, at + 1),
        };
        let (line, after) = rest.split_at(line_len);
        rest = after;
        Some((&line[..content_len], line))
    })
}

/// `raw` with its data replaced by `data`, every other line kept as it was.
/// The new data goes where the first `data:` line was, one `data: ` line per
/// `\n`-separated part (always with the space, so a part that starts with a
/// space keeps it), each ending like that first line.
pub fn with_data(raw: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut written = false;
    for (content, line) in lines(raw) {
        if !matches!(field(content), Some((b"data", _))) {
            out.extend_from_slice(line);
            continue;
        }
        if std::mem::replace(&mut written, true) {
            continue;
        }
        let line_end = &line[content.len()..];
        for part in data.split(|b| *b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(part);
            out.extend_from_slice(line_end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_spelling_of_the_same_event() {
        let spellings: [&[u8]; 5] = [
            b"data: {\"a\": 1}\n\n",
            b"data:{\"a\": 1}\r\n\r\n",
            b": keep-alive\rid: 7\rdata:{\"a\":\rdata: 1}\r\r",
            b"retry: 10\nevent: message\ndata: {\"a\":\ndata:  1}\n\n",
            b"data: {\"a\":\r\ndata: 1}\r\n\n",
        ];
        for raw in spellings {
            let event = Event::parse(raw);
            let value: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
            assert_eq!(value["a"], 1, "{}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(Event::parse(spellings[0]).data, Cow::Borrowed(_)));
        assert_eq!(Event::parse(spellings[3]).name, b"message");
        assert!(!Event::parse(b": only a comment\n\n").has_data);
        assert!(Event::parse(b"data:[DONE]\r\n\r\n").is_done());
        assert!(
            Event::parse(b"data\n\n").has_data,
            "a bare `data` field is empty data"
        );
    }

    #[test]
    fn rebuilding_keeps_other_lines_and_line_ends() {
        let raw = b"event: x\r\ndata:{\"a\":1,\r\ndata: \"b\":2}\r\nid: 3\r\n\r\n";
        assert_eq!(
            with_data(raw, b"{\"a\":1,\n \"c\":3}"),
            b"event: x\r\ndata: {\"a\":1,\r\ndata:  \"c\":3}\r\nid: 3\r\n\r\n".to_vec()
        );
        let rebuilt = with_data(raw, b"{\"a\":1,\n \"c\":3}");
        assert_eq!(&*Event::parse(&rebuilt).data, b"{\"a\":1,\n \"c\":3}");
    }
}
