//! Generated text as the model's tokens: counted with the model's real
//! tokenizer for `usage`, split into stream pieces on token boundaries, and
//! given log probabilities, so all three agree with each other.

use std::ops::Range;

use serde_json::{Value, json};
use tiktoken_rs::CoreBPE;

pub const WORDS: &[&str] = &[
    "the",
    "gateway",
    "routes",
    "each",
    "request",
    "to",
    "a",
    "healthy",
    "deployment",
    "and",
    "streams",
    "tokens",
    "back",
    "while",
    "limits",
    "keep",
    "every",
    "team",
    "inside",
    "its",
    "quota",
    "so",
    "answers",
    "arrive",
    "quickly",
    "with",
    "no",
    "surprises",
    "for",
    "users",
];

/// A sentence of `count` words, capitalised.
pub fn sentence(rng: &mut fastrand::Rng, count: usize) -> String {
    let mut text = String::new();
    for i in 0..count.max(1) {
        let word = WORDS[rng.usize(..WORDS.len())];
        if i == 0 {
            text.extend(word.chars().next().map(|c| c.to_ascii_uppercase()));
            text.push_str(&word[1..]);
        } else {
            text.push(' ');
            text.push_str(word);
        }
    }
    text
}

pub struct Token {
    pub bytes: Vec<u8>,
    /// Where the token starts in the text, in bytes.
    pub start: usize,
    pub logprob: f64,
}

impl Token {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Generated text and its tokens.
pub struct Tokenized {
    pub text: String,
    pub tokens: Vec<Token>,
}

impl Tokenized {
    pub fn new(text: String, bpe: &CoreBPE, rng: &mut fastrand::Rng) -> Self {
        let mut start = 0;
        let tokens = bpe
            .encode_ordinary(&text)
            .into_iter()
            .map(|rank| {
                let bytes = bpe.decode_bytes(&[rank]).unwrap_or_default();
                let token = Token {
                    start,
                    logprob: -(rng.f64() * 0.4),
                    bytes,
                };
                start += token.bytes.len();
                token
            })
            .collect();
        Self { text, tokens }
    }

    /// The text in up to `count` pieces of whole tokens, each with the
    /// range of its tokens. A boundary inside a UTF-8 character (a token
    /// holding half of one) moves to the next token.
    pub fn pieces(&self, count: usize) -> Vec<(&str, Range<usize>)> {
        let total = self.tokens.len();
        let count = count.clamp(1, total.max(1));
        let mut cuts: Vec<usize> = (1..count)
            .map(|i| i * total / count)
            .filter(|&t| self.text.is_char_boundary(self.tokens[t].start))
            .collect();
        cuts.dedup();
        cuts.push(total);
        let mut pieces = Vec::new();
        let mut first = 0;
        for cut in cuts {
            let from = self.tokens.get(first).map_or(0, |t| t.start);
            let to = self.tokens.get(cut).map_or(self.text.len(), |t| t.start);
            pieces.push((&self.text[from..to], first..cut));
            first = cut;
        }
        pieces
    }

    /// Log probabilities for a range of tokens, with `top` alternatives
    /// each (the chosen token first, as the API lists it): chat's
    /// `logprobs.content` and the Responses API's `logprobs` alike.
    pub fn logprobs(&self, tokens: Range<usize>, top: usize) -> Vec<Value> {
        self.tokens[tokens]
            .iter()
            .map(|token| {
                let mut entry = alternative(token.text(), token.logprob);
                entry["top_logprobs"] = Value::Array(
                    alternatives(token, top)
                        .map(|(text, logprob)| alternative(text, logprob))
                        .collect(),
                );
                entry
            })
            .collect()
    }

    /// The completions API's legacy `logprobs` object.
    pub fn legacy_logprobs(&self, tokens: Range<usize>, top: usize) -> Value {
        let tokens = &self.tokens[tokens];
        json!({
            "tokens": tokens.iter().map(Token::text).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "top_logprobs": tokens.iter().map(|t| {
                alternatives(t, top).map(|(text, lp)| (text, json!(lp))).collect::<serde_json::Map<_, _>>()
            }).collect::<Vec<_>>(),
            "text_offset": tokens.iter().map(|t| t.start).collect::<Vec<_>>(),
        })
    }
}

fn alternative(text: String, logprob: f64) -> Value {
    let bytes = text.as_bytes().to_vec();
    json!({"token": text, "logprob": logprob, "bytes": bytes})
}

/// The token itself, then words less likely by a fixed step each.
fn alternatives(token: &Token, top: usize) -> impl Iterator<Item = (String, f64)> + '_ {
    (0..top).map(move |k| {
        if k == 0 {
            (token.text(), token.logprob)
        } else {
            let word = WORDS[(token.start + k) % WORDS.len()];
            (format!(" {word}"), token.logprob - 1.5 * k as f64)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::tokens::Encoding;

    fn tokenized(text: &str) -> Tokenized {
        let mut rng = fastrand::Rng::with_seed(1);
        Tokenized::new(text.to_owned(), Encoding::O200k.bpe(), &mut rng)
    }

    #[test]
    fn pieces_cover_the_text_on_token_boundaries() {
        let text = tokenized("The gateway routes each request to a healthy deployment");
        let pieces = text.pieces(4);
        assert_eq!(pieces.len(), 4);
        let joined: String = pieces.iter().map(|(piece, _)| *piece).collect();
        assert_eq!(joined, text.text);
        assert_eq!(pieces.last().unwrap().1.end, text.tokens.len());
        assert_eq!(text.pieces(100).len(), text.tokens.len());
    }

    #[test]
    fn a_piece_never_splits_a_character() {
        let text = tokenized("日本語のテキスト🙂🙂 mixed");
        for count in 1..20 {
            let joined: String = text.pieces(count).iter().map(|(p, _)| *p).collect();
            assert_eq!(joined, text.text);
        }
    }

    #[test]
    fn logprobs_list_the_token_first_then_alternatives() {
        let text = tokenized("Hello world");
        let entries = text.logprobs(0..text.tokens.len(), 3);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["token"], "Hello");
        assert_eq!(entries[0]["bytes"], json!(b"Hello".to_vec()));
        let top = entries[1]["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], " world");
        assert!(top[1]["logprob"].as_f64() < top[0]["logprob"].as_f64());
    }
}
