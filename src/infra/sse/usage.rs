//! Token usage read off upstream answers: a JSON body, one SSE event, or a
//! relayed stream as it passes; and the events a client that did not ask
//! for usage must not see.

use serde::Deserialize;

use super::{Event, Piece, Splitter, json, with_data};
use crate::vocab::Usage;

/// Chat/completions/embeddings name the fields `prompt_/completion_tokens`,
/// the Responses API and Anthropic's Messages API `input_/output_tokens`.
/// Anthropic counts prompt-cache reads and writes apart from
/// `input_tokens`; they are prompt tokens too. Every field is optional: a
/// Messages stream reports usage twice (`message_start`, then
/// `message_delta` with the output count), and the later report's fields
/// replace the earlier's one by one.
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    /// The Responses and Messages APIs' spelling; only Messages adds cache
    /// counts apart from it (an OpenAI-shaped `prompt_tokens` already
    /// includes them where a proxy also sends them).
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(alias = "output_tokens", default)]
    completion_tokens: Option<u64>,
    #[serde(alias = "input_tokens_details", default)]
    prompt_tokens_details: Option<CachedDetails>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
struct CachedDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize)]
struct Carrier {
    #[serde(default)]
    usage: Option<RawUsage>,
    /// Responses API stream events carry it inside `response`, the
    /// Messages API's `message_start` inside `message`.
    #[serde(default, alias = "message")]
    response: Option<Box<Carrier>>,
}

impl RawUsage {
    /// `later`'s fields where it has them, else this one's.
    fn updated(self, later: Self) -> Self {
        Self {
            prompt_tokens: later.prompt_tokens.or(self.prompt_tokens),
            input_tokens: later.input_tokens.or(self.input_tokens),
            completion_tokens: later.completion_tokens.or(self.completion_tokens),
            prompt_tokens_details: later.prompt_tokens_details.or(self.prompt_tokens_details),
            cache_read_input_tokens: later
                .cache_read_input_tokens
                .or(self.cache_read_input_tokens),
            cache_creation_input_tokens: later
                .cache_creation_input_tokens
                .or(self.cache_creation_input_tokens),
        }
    }
}

impl From<RawUsage> for Usage {
    fn from(raw: RawUsage) -> Self {
        let cached = raw.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
        let completion_tokens = raw.completion_tokens.unwrap_or(0);
        match (raw.prompt_tokens, raw.input_tokens) {
            (Some(prompt_tokens), _) => Self {
                prompt_tokens,
                completion_tokens,
                cached_tokens: cached,
            },
            (None, input) => {
                let cache_read = raw.cache_read_input_tokens.unwrap_or(0);
                let cache_write = raw.cache_creation_input_tokens.unwrap_or(0);
                Self {
                    prompt_tokens: input.unwrap_or(0) + cache_read + cache_write,
                    completion_tokens,
                    cached_tokens: cached.max(cache_read),
                }
            }
        }
    }
}

/// Usage from a JSON body or one SSE event's data.
pub fn parse(json: &[u8]) -> Option<Usage> {
    parse_raw(json).map(Usage::from)
}

fn parse_raw(json: &[u8]) -> Option<RawUsage> {
    let carrier: Carrier = serde_json::from_slice(json).ok()?;
    match (carrier.usage, carrier.response) {
        (Some(usage), _) => Some(usage),
        (None, Some(response)) => response.usage,
        (None, None) => None,
    }
}

/// What a client that did not ask for usage gets in place of one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Hidden {
    /// The event as it came.
    Keep,
    /// Nothing: the usage-only chunk (a `usage` object and `"choices": []`,
    /// or no `choices` at all, as some compatible servers write it).
    Drop,
    /// The event without its top-level `"usage": null` member.
    Rewrite(Vec<u8>),
}

/// Undoes what `stream_options.include_usage` added to one whole event (as
/// `sse::Splitter` hands it on), in any spelling: the event's data is read by
/// the grammar and the member found by walking the JSON, so spaces, line
/// ends and split `data:` lines do not matter. Events that do not mention
/// `"usage"` (a JSON key cannot be split across lines) are not read at all.
pub fn hide_in_event(raw: &[u8]) -> Hidden {
    if memchr::memmem::find(raw, USAGE_KEY).is_none() {
        return Hidden::Keep;
    }
    let event = Event::parse(raw);
    let data = &event.data;
    let Some(usage) = json::member(data, b"usage") else {
        return Hidden::Keep;
    };
    let value = &data[usage.value.clone()];
    if value == b"null" {
        return Hidden::Rewrite(with_data(raw, &json::without(data, &usage)));
    }
    let no_choices = json::member(data, b"choices")
        .is_none_or(|choices| json::is_empty_array(&data[choices.value]));
    match value.first() == Some(&b'{') && no_choices {
        true => Hidden::Drop,
        false => Hidden::Keep,
    }
}

/// The usage one whole event reports: a chat/completions chunk's top-level
/// `usage` object, the Responses API's `response.usage` (on
/// `response.completed`), or the Messages API's `message.usage` (on
/// `message_start`). Only such an event is parsed with serde; the
/// `"usage": null` on every other chunk is recognised by the walk alone.
fn usage_in_event(raw: &[u8]) -> Option<(RawUsage, bool)> {
    memchr::memmem::find(raw, USAGE_KEY)?;
    let event = Event::parse(raw);
    let data = &event.data;
    if !names_an_object(data) {
        return None;
    }
    let is_object = |doc: &[u8]| {
        json::member(doc, b"usage").is_some_and(|usage| doc.get(usage.value.start) == Some(&b'{'))
    };
    let nested =
        |name: &[u8]| json::member(data, name).is_some_and(|inner| is_object(&data[inner.value]));
    let top = is_object(data);
    let opening = !top && nested(b"message");
    let reports = top || nested(b"response") || opening;
    reports
        .then(|| parse_raw(data).map(|usage| (usage, opening)))
        .flatten()
}

const USAGE_KEY: &[u8] = b"\"usage\"";

/// Whether some `"usage"` in `data` is followed by `:` and `{` (any
/// whitespace between): a cheap test that spares the walk on the
/// `"usage": null` of every ordinary chunk.
fn names_an_object(data: &[u8]) -> bool {
    let after_space = |at: usize| {
        data.get(at..)
            .and_then(|rest| rest.iter().position(|b| !b.is_ascii_whitespace()))
            .map(|skipped| at + skipped)
    };
    memchr::memmem::find_iter(data, USAGE_KEY).any(|at| {
        after_space(at + USAGE_KEY.len())
            .filter(|colon| data[*colon] == b':')
            .and_then(|colon| after_space(colon + 1))
            .is_some_and(|value| data[value] == b'{')
    })
}

/// Finds usage in a relayed SSE stream as it passes. Events are cut by the
/// grammar (`sse::Splitter`); one that spans chunks is carried up to
/// `EVENT_LIMIT`, a longer one is not read (a usage event is a few hundred
/// bytes). The cost is linear however the stream is cut.
pub struct StreamUsageScanner {
    splitter: Splitter,
    found: Option<RawUsage>,
    /// The last report was a Messages stream's opening one (`message_start`,
    /// its output count a placeholder): a stream cut before its
    /// `message_delta` has no usage to report.
    provisional: bool,
}

const EVENT_LIMIT: usize = 256 * 1024;

impl Default for StreamUsageScanner {
    fn default() -> Self {
        Self {
            splitter: Splitter::new(EVENT_LIMIT),
            found: None,
            provisional: false,
        }
    }
}

impl StreamUsageScanner {
    pub fn scan(&mut self, chunk: &[u8]) {
        let (found, provisional) = (&mut self.found, &mut self.provisional);
        self.splitter.feed(chunk, |piece| {
            if let Piece::Event(raw) = piece
                && let Some((usage, opening)) = usage_in_event(raw)
            {
                *found = Some(found.unwrap_or_default().updated(usage));
                *provisional = opening;
            }
        });
    }

    pub fn usage(&self) -> Option<Usage> {
        self.found.filter(|_| !self.provisional).map(Usage::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spelling::{self, Spelling};

    #[test]
    fn parses_chat_responses_and_nested_usage() {
        let chat = br#"{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(
            parse(chat),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 4
            })
        );
        let responses = br#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":3,"input_tokens_details":{"cached_tokens":0}}}}"#;
        assert_eq!(parse(responses).map(|u| u.total()), Some(10));
        assert_eq!(parse(br#"{"usage":null}"#), None);
    }

    #[test]
    fn scanner_finds_usage_split_across_chunks() {
        let mut scanner = StreamUsageScanner::default();
        scanner.scan(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n");
        assert_eq!(scanner.usage(), None);
        scanner.scan(b"data: {\"choices\":[],\"usage\":{\"prompt_to");
        scanner.scan(b"kens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
        assert_eq!(scanner.usage().map(|u| u.total()), Some(11));
    }

    #[test]
    fn scanner_reads_spaced_json_cr_lines_and_split_data_lines() {
        let mut scanner = StreamUsageScanner::default();
        scanner.scan(b": ping\r\rdata:{\"choices\": [], \"us");
        scanner.scan(b"age\":\rdata: {\"prompt_tokens\": 1, \"completion_tokens\": 2}}\r");
        assert_eq!(scanner.usage(), None, "the event has not ended");
        scanner.scan(b"\r");
        assert_eq!(scanner.usage().map(|u| u.total()), Some(3));
        let mut scanner = StreamUsageScanner::default();
        scanner.scan(b"event: response.completed\r\ndata: {\"type\": \"response.completed\", \"response\": {\"usage\": {\"input_tokens\": 4, \"output_tokens\": 5}}}\r\n\r\n");
        assert_eq!(scanner.usage().map(|u| u.total()), Some(9));
    }

    #[test]
    fn a_messages_streams_two_reports_make_one_usage() {
        let mut scanner = StreamUsageScanner::default();
        scanner.scan(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1,\"cache_read_input_tokens\":20,\"cache_creation_input_tokens\":3}}}\n\n");
        scanner.scan(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\\"usage\\\": {\"}}\n\n");
        assert_eq!(scanner.usage(), None, "cut here, the output is unknown");
        scanner.scan(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n");
        let usage = scanner.usage().unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 32,
                completion_tokens: 15,
                cached_tokens: 20
            }
        );
        let whole = br#"{"type":"message","content":[],"usage":{"input_tokens":4,"output_tokens":2,"cache_read_input_tokens":1}}"#;
        assert_eq!(
            parse(whole).map(|u| (u.prompt_tokens, u.cached_tokens)),
            Some((5, 1))
        );
    }

    #[test]
    fn scanner_skips_an_endless_event_with_a_bounded_carry() {
        let mut scanner = StreamUsageScanner::default();
        let piece = vec![b'x'; 1000];
        for _ in 0..1000 {
            scanner.scan(&piece);
        }
        assert!(scanner.splitter.holds_nothing());
        scanner.scan(b"\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4}}\n\n");
        assert_eq!(scanner.usage().map(|u| u.total()), Some(4));
    }

    #[test]
    fn hiding_drops_the_usage_chunk_and_cuts_usage_null_in_any_spelling() {
        assert_eq!(
            hide_in_event(b"data: {\"a\":1,\"usage\":null,\"b\":2}\n\n"),
            Hidden::Rewrite(b"data: {\"a\":1,\"b\":2}\n\n".to_vec())
        );
        assert_eq!(
            hide_in_event(b"data:{\"a\": 1, \"usage\": null}\r\n\r\n"),
            Hidden::Rewrite(b"data: {\"a\": 1}\r\n\r\n".to_vec())
        );
        assert_eq!(
            hide_in_event(b"data: {\"choices\": [ ], \"usage\": {\"total_tokens\": 4}}\r\r"),
            Hidden::Drop
        );
        assert_eq!(
            hide_in_event(b"data: {\"choices\": [],\ndata: \"usage\": {\"total_tokens\": 4}}\n\n"),
            Hidden::Drop
        );
        assert_eq!(
            hide_in_event(b"data: {\"usage\": {\"total_tokens\": 4}}\n\n"),
            Hidden::Drop,
            "a usage chunk without choices"
        );
        // Azure's first chunk has no choices but is not a usage chunk.
        assert_eq!(
            hide_in_event(b"data: {\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}],\"usage\":null}\n\n"),
            Hidden::Rewrite(b"data: {\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n".to_vec())
        );
        for kept in [
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\": null\"}}]}\n\n"[..],
            b"data: {\"choices\":[{}],\"usage\":{\"total_tokens\":4}}\n\n",
            b"data: [DONE]\n\n",
            b": \"usage\": null\n\n",
        ] {
            assert_eq!(
                hide_in_event(kept),
                Hidden::Keep,
                "{}",
                String::from_utf8_lossy(kept)
            );
        }
    }

    fn scan_pieces(pieces: &[Vec<u8>]) -> Option<Usage> {
        let mut scanner = StreamUsageScanner::default();
        for piece in pieces {
            scanner.scan(piece);
        }
        scanner.usage()
    }

    /// Any legal spelling of a chat or Responses stream, cut anywhere, gives
    /// the same usage.
    #[test]
    fn usage_is_found_in_every_spelling_and_cut() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..400 {
            let (prompt, completion) = (rng.u64(1..100_000), rng.u64(0..100_000));
            let events = match round % 2 {
                0 => spelling::chat_stream(&mut rng, prompt, completion),
                _ => spelling::responses_stream(&mut rng, prompt, completion),
            };
            let spelled = Spelling::random(&mut rng).stream(&events).concat();
            let pieces = spelling::cut(&mut rng, spelled.as_bytes(), 12);
            let found = scan_pieces(&pieces);
            assert_eq!(
                found.map(|u| (u.prompt_tokens, u.completion_tokens)),
                Some((prompt, completion)),
                "{spelled:?} cut {pieces:?}"
            );
        }
    }
}
