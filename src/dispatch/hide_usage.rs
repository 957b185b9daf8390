//! Sluice asks upstreams for streamed usage (`stream_options.include_usage`)
//! even when the client did not, so limits, metrics and cost see every
//! stream. For such a client this removes what that option added, so it gets
//! exactly the stream it would have had: the usage-only chunk, and the
//! `"usage":null` field on every other chunk. Byte-level cuts, no JSON
//! re-serialising; a line split across chunks is carried to the next one.

use bytes::{Bytes, BytesMut};

const USAGE: &[u8] = b"\"usage\"";

#[derive(Default)]
pub struct UsageHider {
    /// The start of a line whose end has not arrived yet.
    carry: BytesMut,
    /// The last line kept was dropped (so its blank separator goes too).
    dropped_event: bool,
}

impl UsageHider {
    /// The complete lines of `chunk` (after any carried part), cleaned.
    pub fn filter(&mut self, chunk: Bytes) -> Bytes {
        let mentions_usage = memchr::memmem::find(&chunk, USAGE).is_some();
        if self.carry.is_empty() && !self.dropped_event && !mentions_usage && chunk.ends_with(b"\n")
        {
            return chunk;
        }
        self.carry.extend_from_slice(&chunk);
        let Some(last_newline) = memchr::memrchr(b'\n', &self.carry) else {
            return Bytes::new();
        };
        let complete = self.carry.split_to(last_newline + 1);
        let mut out = Vec::with_capacity(complete.len());
        for line in complete.split_inclusive(|b| *b == b'\n') {
            let content = line.strip_suffix(b"\n").unwrap_or(line);
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
        Bytes::from(out)
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
}
