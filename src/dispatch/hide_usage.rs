//! Sluice asks upstreams for streamed usage (`stream_options.include_usage`)
//! even when the client did not, so limits, metrics and cost see every
//! stream. For such a client this removes what that option added, so it gets
//! exactly the stream it would have had: the usage-only chunk, and the
//! `"usage":null` field on every other chunk. Byte-level cuts, no JSON
//! re-serialising; a line split across chunks is carried to the next one.

use bytes::{Bytes, BytesMut};

const USAGE: &[u8] = b"\"usage\"";

/// Longest line start carried while waiting for its end. A usage chunk is a
/// few hundred bytes; a longer line passes through unfiltered instead of
/// growing the carry.
const CARRY_LIMIT: usize = 64 * 1024;

#[derive(Default)]
pub struct UsageHider {
    /// The start of a line whose end has not arrived yet.
    carry: BytesMut,
    /// The last line kept was dropped (so its blank separator goes too).
    dropped_event: bool,
    /// Inside a line longer than `CARRY_LIMIT`: bytes pass through untouched
    /// until its end.
    passing: bool,
}

impl UsageHider {
    /// The complete lines of `chunk` (after any carried part), cleaned. Each
    /// byte is searched for line ends once, so the cost is linear however the
    /// stream is cut.
    pub fn filter(&mut self, mut chunk: Bytes) -> Bytes {
        let mut out = BytesMut::new();
        if self.passing {
            let Some(end) = memchr::memchr(b'\n', &chunk) else {
                return chunk;
            };
            self.passing = false;
            let line_end = chunk.split_to(end + 1);
            if chunk.is_empty() {
                return line_end;
            }
            out.extend_from_slice(&line_end);
        }
        let mentions_usage = memchr::memmem::find(&chunk, USAGE).is_some();
        if out.is_empty()
            && self.carry.is_empty()
            && !self.dropped_event
            && !mentions_usage
            && chunk.ends_with(b"\n")
        {
            return chunk;
        }
        let rest = match memchr::memrchr(b'\n', &chunk) {
            Some(last_newline) => {
                let rest = chunk.split_off(last_newline + 1);
                self.carry.extend_from_slice(&chunk);
                let complete = self.carry.split();
                self.clean(&complete, &mut out);
                rest
            }
            None => chunk,
        };
        self.hold(&rest, &mut out);
        out.freeze()
    }

    /// Appends the kept lines of `complete` (whole lines) to `out`.
    fn clean(&mut self, complete: &[u8], out: &mut BytesMut) {
        for line in complete.split_inclusive(|b| *b == b'\n') {
            let content = line.strip_suffix(b"\n").unwrap_or(line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.is_empty() && std::mem::take(&mut self.dropped_event) {
                continue;
            }
            if is_usage_only(content) {
                self.dropped_event = true;
                continue;
            }
            self.dropped_event = false;
            out.extend_from_slice(&crate::usage::without_usage_null(line));
        }
    }

    /// Carries the start of an unfinished line, or, past `CARRY_LIMIT`,
    /// sends it on as it is and lets the rest of that line pass.
    fn hold(&mut self, partial: &[u8], out: &mut BytesMut) {
        if self.carry.len() + partial.len() <= CARRY_LIMIT {
            self.carry.extend_from_slice(partial);
            return;
        }
        out.extend_from_slice(&self.carry.split());
        out.extend_from_slice(partial);
        self.dropped_event = false;
        self.passing = true;
    }

    /// What is left when the stream ends (a last line without a newline).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.carry.is_empty()).then(|| self.carry.split().freeze())
    }
}

fn is_usage_only(line: &[u8]) -> bool {
    line.starts_with(b"data:") && crate::usage::is_usage_only(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> String {
        let mut hider = UsageHider::default();
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(
                std::str::from_utf8(&hider.filter(Bytes::copy_from_slice(chunk.as_bytes())))
                    .unwrap(),
            );
        }
        if let Some(rest) = hider.finish() {
            out.push_str(std::str::from_utf8(&rest).unwrap());
        }
        out
    }

    #[test]
    fn restores_the_stream_a_client_without_include_usage_would_get() {
        let with_usage = [
            "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
            "data: [DONE]\n\n",
        ];
        let expected = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(run(&with_usage), expected);
        // The same bytes cut at awkward places.
        let joined: String = with_usage.concat();
        let pieces: Vec<&str> = vec![
            &joined[..7],
            &joined[7..90],
            &joined[90..200],
            &joined[200..],
        ];
        assert_eq!(run(&pieces), expected);
    }

    #[test]
    fn untouched_chunks_pass_without_copying() {
        let mut hider = UsageHider::default();
        let chunk =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        let out = hider.filter(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn an_endless_line_passes_through_with_a_bounded_carry() {
        let mut hider = UsageHider::default();
        let piece = Bytes::from(vec![b'x'; 1000]);
        let mut passed = 0;
        for _ in 0..1000 {
            passed += hider.filter(piece.clone()).len();
            assert!(hider.carry.len() <= CARRY_LIMIT);
        }
        assert_eq!(
            passed + hider.finish().map_or(0, |rest| rest.len()),
            1_000_000
        );
        // Once the long line ends, filtering resumes.
        let usage = "\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\n\ndata: [DONE]\n\n";
        let out = hider.filter(Bytes::from(usage));
        assert_eq!(&out[..], b"\ndata: [DONE]\n\n");
    }

    #[test]
    fn crlf_lines_are_cleaned_too() {
        let stream = "data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\r\n\r\ndata: [DONE]\r\n\r\n";
        assert_eq!(
            run(&[stream]),
            "data: {\"choices\":[{\"delta\":{}}]}\r\n\r\ndata: [DONE]\r\n\r\n"
        );
    }
}
