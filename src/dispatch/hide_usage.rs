//! Sluice asks upstreams for streamed usage (`stream_options.include_usage`)
//! even when the client did not, so limits, metrics and cost see every
//! stream. For such a client this removes what that option added, so it gets
//! exactly the events it would have had: the usage-only chunk, and the
//! `"usage": null` member on every other chunk, in whatever spelling the
//! upstream used (`usage::hide_in_event`). Events are cut by the grammar
//! (`sse::Splitter`); an event split across chunks is held until it ends.

use bytes::{Bytes, BytesMut};

use crate::infra::sse::usage::{Hidden, hide_in_event};
use crate::infra::sse::{Piece, Splitter};

/// Longest event held while waiting for its end. A usage chunk is a few
/// hundred bytes; a longer event passes through unfiltered instead of
/// growing the carry.
const CARRY_LIMIT: usize = 64 * 1024;

pub struct UsageHider {
    splitter: Splitter,
    /// The last event was dropped, so the `\n` that may still follow its
    /// final `\r` goes too.
    dropped_event: bool,
}

impl Default for UsageHider {
    fn default() -> Self {
        Self {
            splitter: Splitter::new(CARRY_LIMIT),
            dropped_event: false,
        }
    }
}

impl UsageHider {
    /// The whole events of `chunk` (after any held part), cleaned. A chunk
    /// with nothing to change comes back as the same `Bytes` (or a slice of
    /// it, when it ends inside an event); only a changed one is rebuilt.
    pub fn filter(&mut self, chunk: Bytes) -> Bytes {
        let mut out = Output {
            rebuilt: (!self.splitter.holds_nothing()).then(BytesMut::new),
            kept: 0,
        };
        let dropped_event = &mut self.dropped_event;
        self.splitter.feed(&chunk, |piece| match piece {
            Piece::Tail(_) if *dropped_event => out.replace(&chunk, &[]),
            Piece::Tail(tail) => out.keep(tail),
            Piece::Oversized(bytes) => {
                *dropped_event = false;
                out.keep(bytes);
            }
            Piece::Event(raw) => {
                *dropped_event = false;
                match hide_in_event(raw) {
                    Hidden::Keep => out.keep(raw),
                    Hidden::Drop => {
                        *dropped_event = true;
                        out.replace(&chunk, &[]);
                    }
                    Hidden::Rewrite(cleaned) => out.replace(&chunk, &cleaned),
                }
            }
        });
        match out.rebuilt {
            Some(rebuilt) => rebuilt.freeze(),
            None if out.kept == chunk.len() => chunk,
            None => chunk.slice(..out.kept),
        }
    }

    /// What is left when the stream ends: an unfinished event, as it came.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.splitter.finish().map(Bytes::from)
    }
}

/// A filtered chunk under construction. While nothing changed it is only a
/// count of the chunk's leading bytes kept; the first change copies those
/// and everything after it goes into a new buffer.
struct Output {
    rebuilt: Option<BytesMut>,
    kept: usize,
}

impl Output {
    /// `bytes` pass unchanged; while nothing was rebuilt they are the next
    /// bytes of the chunk (the splitter hands on its pieces in order).
    fn keep(&mut self, bytes: &[u8]) {
        match &mut self.rebuilt {
            Some(rebuilt) => rebuilt.extend_from_slice(bytes),
            None => self.kept += bytes.len(),
        }
    }

    /// A piece is replaced by `with`.
    fn replace(&mut self, chunk: &[u8], with: &[u8]) {
        let kept = self.kept;
        self.rebuilt
            .get_or_insert_with(|| BytesMut::from(&chunk[..kept]))
            .extend_from_slice(with);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spelling::{self, Spelling};

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
    fn an_endless_event_passes_through_with_a_bounded_carry() {
        let mut hider = UsageHider::default();
        let piece = Bytes::from(vec![b'x'; 1000]);
        let mut passed = 0;
        for _ in 0..1000 {
            passed += hider.filter(piece.clone()).len();
        }
        // All but what the limit lets it hold has gone through by now.
        assert_eq!(passed, 1_000_000);
        assert!(hider.splitter.holds_nothing());
        // Once the long event ends, filtering resumes.
        let usage = "\n\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\n\ndata: [DONE]\n\n";
        let out = hider.filter(Bytes::from(usage));
        assert_eq!(&out[..], b"\n\ndata: [DONE]\n\n");
    }

    #[test]
    fn crlf_lines_are_cleaned_too() {
        let stream = "data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\r\n\r\ndata: [DONE]\r\n\r\n";
        assert_eq!(
            run(&[stream]),
            "data: {\"choices\":[{\"delta\":{}}]}\r\n\r\ndata: [DONE]\r\n\r\n"
        );
    }

    fn hide(pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut hider = UsageHider::default();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&hider.filter(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&hider.finish().unwrap_or_default());
        out
    }

    /// Any legal spelling of a stream, cut anywhere: the client that did not
    /// ask for usage gets the events it would have had without it.
    #[test]
    fn hidden_usage_gives_the_same_events_in_every_spelling_and_cut() {
        let mut rng = fastrand::Rng::with_seed(11);
        for round in 0..400 {
            let events = match round % 3 {
                0 | 1 => spelling::chat_stream(&mut rng, 5, 7),
                _ => spelling::responses_stream(&mut rng, 5, 7),
            };
            let expected =
                spelling::without_usage(spelling::parse_stream(events.concat().as_bytes()));
            let spelled = Spelling::random(&mut rng).stream(&events).concat();
            let pieces = spelling::cut(&mut rng, spelled.as_bytes(), 12);
            let out = hide(&pieces);
            assert_eq!(
                spelling::parse_stream(&out),
                expected,
                "{spelled:?} cut {pieces:?} gave {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    /// A stream with nothing to hide passes byte for byte in any spelling
    /// and cut (Responses events carry `"usage": null` nested, not on top).
    #[test]
    fn streams_with_nothing_to_hide_pass_byte_for_byte() {
        let mut rng = fastrand::Rng::with_seed(13);
        for round in 0..300 {
            let events: Vec<String> = match round % 2 {
                0 => spelling::chat_stream(&mut rng, 5, 7)
                    .into_iter()
                    .filter(|event| !event.contains("\"choices\":[]"))
                    .map(|event| {
                        event
                            .replace(",\"usage\":null", "")
                            .replace("\"usage\":null,", "")
                    })
                    .collect(),
                _ => spelling::responses_stream(&mut rng, 5, 7),
            };
            let spelled = Spelling::random(&mut rng).stream(&events).concat();
            let pieces = spelling::cut(&mut rng, spelled.as_bytes(), 12);
            assert_eq!(String::from_utf8_lossy(&hide(&pieces)), spelled);
        }
    }

    /// Byte soup of SSE and JSON fragments, now and then an event longer
    /// than the carry limit: what comes out never depends on the cuts, and
    /// the scanner agrees with itself too.
    #[test]
    fn the_output_never_depends_on_where_the_stream_was_cut() {
        const FRAGMENTS: [&str; 14] = [
            "data: ",
            "data:",
            "\n",
            "\r",
            "\r\n",
            ": c",
            "event: x",
            "[DONE]",
            "\"usage\"",
            "{\"usage\": null, \"a\": 1}",
            "{\"choices\":[],\"usage\":{\"prompt_tokens\":2}}",
            "{",
            "}",
            ",",
        ];
        let mut rng = fastrand::Rng::with_seed(19);
        for round in 0..500 {
            let mut stream = Vec::new();
            for _ in 0..rng.usize(0..40) {
                stream.extend_from_slice(FRAGMENTS[rng.usize(0..FRAGMENTS.len())].as_bytes());
                if round % 50 == 0 && rng.usize(0..20) == 0 {
                    stream.extend(std::iter::repeat_n(b'x', CARRY_LIMIT + 1));
                }
            }
            let pieces = spelling::cut(&mut rng, &stream, 10);
            assert_eq!(hide(std::slice::from_ref(&stream)), hide(&pieces));
            let scan = |pieces: &[Vec<u8>]| {
                let mut scanner = crate::infra::sse::usage::StreamUsageScanner::default();
                pieces.iter().for_each(|piece| scanner.scan(piece));
                scanner.usage()
            };
            assert_eq!(scan(std::slice::from_ref(&stream)), scan(&pieces));
        }
    }
}
