//! Token counts with the model's real tokenizer, following OpenAI's chat rule
//! (3 tokens per message, +1 for a `name`, +3 for the reply). Used for TPM
//! estimates (prompt plus max output), token budgets and the `auto` router.

mod view;

use std::collections::HashMap;

use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

use crate::config::ModelSettings;
use crate::vocab::Endpoint;

pub use view::BodyView;

/// Each model's tokenizer: its `[models."NAME"] encoding` where set, else
/// the one its name implies.
#[derive(Clone, Default)]
pub struct Encodings(HashMap<String, Encoding>);

impl Encodings {
    pub fn from_config(models: &HashMap<String, ModelSettings>) -> Self {
        Self(
            models
                .iter()
                .filter_map(|(name, settings)| {
                    Some((
                        name.clone(),
                        Encoding::from_name(settings.encoding.as_deref()?)?,
                    ))
                })
                .collect(),
        )
    }

    pub fn of(&self, model: &str) -> Encoding {
        self.0
            .get(model)
            .copied()
            .unwrap_or_else(|| Encoding::for_model(model))
    }
}

/// A flat estimate for an image part (the low-detail price); high-detail
/// images cost more and are corrected from `usage` afterwards.
const IMAGE_TOKENS: u64 = 85;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
}

impl Encoding {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "o200k_base" => Some(Self::O200k),
            "cl100k_base" => Some(Self::Cl100k),
            _ => None,
        }
    }

    /// `cl100k_base` for gpt-4, gpt-3.5 and the embedding models; `o200k_base`
    /// for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, the o-series and anything newer.
    pub fn for_model(model: &str) -> Self {
        let model = model.to_ascii_lowercase();
        let older = model.starts_with("gpt-3.5")
            || model.starts_with("gpt-35")
            || model.starts_with("text-embedding")
            || (model.starts_with("gpt-4")
                && !model.starts_with("gpt-4o")
                && !model.starts_with("gpt-4.")
                && !model.starts_with("gpt-4-o"));
        if older { Self::Cl100k } else { Self::O200k }
    }

    pub(crate) fn bpe(self) -> &'static CoreBPE {
        match self {
            Self::O200k => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Loads the tokenizer tables now rather than on the first request.
    pub fn warm(self) {
        let _ = self.bpe();
    }
}

pub struct Estimator {
    pub default_max_tokens: u64,
}

impl Estimator {
    /// The output tokens a request may produce: its max output times its
    /// `n` choices, else `default_max_tokens`. With the prompt's tokens
    /// (`BodyView::prompt_tokens`) this is a request's TPM estimate.
    pub fn output(&self, endpoint: Endpoint, request: Option<&Map<String, Value>>) -> u64 {
        match endpoint {
            // A count, or a call on a stored object, makes nothing new.
            _ if endpoint.makes_no_tokens() || endpoint == Endpoint::Realtime => return 0,
            // An upload's tokens are not known before it is transcribed.
            _ if endpoint.takes_multipart() => return self.default_max_tokens,
            _ => {}
        }
        let Some(request) = request else {
            return self.default_max_tokens;
        };
        let choices = request.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
        let output = max_output(endpoint, request).unwrap_or(self.default_max_tokens);
        // Saturating: `n` and `max_tokens` are the client's, and a product
        // that wrapped would slip a huge request under the TPM limit.
        output.saturating_mul(choices)
    }
}

/// About four bytes a token, rounded up: the usual rule for English text,
/// and on the high side for JSON, which is the safer side for limits and
/// cost alike.
pub fn size_estimate(size: usize) -> u64 {
    (size as u64).div_ceil(4)
}

/// The prompt's tokens: messages (with OpenAI's overheads) and tools for chat,
/// `prompt` for completions, `input` for embeddings, `input` and
/// `instructions` for responses.
pub fn prompt_tokens(endpoint: Endpoint, request: &Map<String, Value>, encoding: Encoding) -> u64 {
    let counter = Counter {
        bpe: encoding.bpe(),
    };
    match endpoint {
        Endpoint::ChatCompletions => {
            counter.messages(request.get("messages"))
                + request.get("tools").map_or(0, |tools| counter.json(tools))
        }
        Endpoint::Completions => counter.inputs(request.get("prompt")),
        Endpoint::Embeddings | Endpoint::Moderations | Endpoint::AudioSpeech => {
            counter.inputs(request.get("input"))
        }
        Endpoint::ImageGenerations => counter.inputs(request.get("prompt")),
        Endpoint::Responses | Endpoint::ResponsesCompact => {
            counter.any_text(request.get("input")) + counter.any_text(request.get("instructions"))
        }
        // Counted for nothing: the count is free upstream.
        Endpoint::ResponsesInputTokens => 0,
        Endpoint::AudioTranscriptions
        | Endpoint::AudioTranslations
        | Endpoint::ImageEdits
        | Endpoint::ImageVariations
        | Endpoint::RealtimeClientSecrets
        | Endpoint::RealtimeSessions
        // A session's tokens are charged as its responses report them.
        | Endpoint::Realtime
        | Endpoint::Stored => 0,
    }
}

/// A Responses request's input tokens as `POST /responses/input_tokens`
/// counts them: `input`, `instructions` and the tools' definitions. Sluice
/// answers with this count when a deployment cannot count.
pub fn responses_input_tokens(request: &Map<String, Value>, encoding: Encoding) -> u64 {
    let counter = Counter {
        bpe: encoding.bpe(),
    };
    counter.any_text(request.get("input"))
        + counter.any_text(request.get("instructions"))
        + request.get("tools").map_or(0, |tools| counter.json(tools))
}

/// The field that bounds output tokens for an endpoint, newest name first.
pub fn output_fields(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::ChatCompletions => &["max_completion_tokens", "max_tokens"],
        Endpoint::Completions => &["max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
        _ => &[],
    }
}

/// The request's max output tokens; embeddings and moderations produce none.
pub fn max_output(endpoint: Endpoint, request: &Map<String, Value>) -> Option<u64> {
    if matches!(endpoint, Endpoint::Embeddings | Endpoint::Moderations) {
        return Some(0);
    }
    output_fields(endpoint)
        .iter()
        .find_map(|field| request.get(*field).and_then(Value::as_u64))
}

struct Counter {
    bpe: &'static CoreBPE,
}

impl Counter {
    fn text(&self, text: &str) -> u64 {
        self.bpe.count_ordinary(text) as u64
    }

    fn json(&self, value: &Value) -> u64 {
        self.text(&value.to_string())
    }

    fn messages(&self, messages: Option<&Value>) -> u64 {
        let Some(Value::Array(messages)) = messages else {
            return 0;
        };
        let per_message: u64 = messages
            .iter()
            .map(|message| {
                let Value::Object(message) = message else {
                    return 3;
                };
                let mut tokens = 3;
                for (key, value) in message {
                    tokens += match (key.as_str(), value) {
                        ("name", Value::String(name)) => 1 + self.text(name),
                        ("content", content) => self.content(content),
                        ("tool_calls" | "function_call", calls) => self.json(calls),
                        (_, Value::String(text)) => self.text(text),
                        _ => 0,
                    };
                }
                tokens
            })
            .sum();
        per_message + 3
    }

    /// A message's content: a string or a list of parts.
    fn content(&self, content: &Value) -> u64 {
        match content {
            Value::String(text) => self.text(text),
            Value::Array(parts) => parts
                .iter()
                .map(|part| match part.get("type").and_then(Value::as_str) {
                    Some("image_url" | "input_image") => IMAGE_TOKENS,
                    _ => part
                        .get("text")
                        .and_then(Value::as_str)
                        .map_or(0, |t| self.text(t)),
                })
                .sum(),
            _ => 0,
        }
    }

    /// `prompt` / `input`: a string, a list of strings, or token arrays.
    fn inputs(&self, input: Option<&Value>) -> u64 {
        match input {
            Some(Value::String(text)) => self.text(text),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => self.text(text),
                    Value::Array(tokens) => tokens.len() as u64,
                    Value::Number(_) => 1,
                    _ => 0,
                })
                .sum(),
            _ => 0,
        }
    }

    /// Responses `input` items nest text in several shapes; count every string
    /// under `text` or `content`, and 3 per item like chat messages.
    fn any_text(&self, value: Option<&Value>) -> u64 {
        match value {
            Some(Value::String(text)) => self.text(text),
            Some(Value::Array(items)) => {
                items.iter().map(|item| 3 + self.any_text(Some(item))).sum()
            }
            Some(Value::Object(object)) => object
                .iter()
                .map(|(key, value)| match (key.as_str(), value) {
                    ("text" | "content" | "output" | "arguments", _) => self.any_text(Some(value)),
                    ("type", Value::String(kind)) if kind.contains("image") => IMAGE_TOKENS,
                    _ => 0,
                })
                .sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's TPM estimate, as the rate limiter makes it.
    fn estimate(endpoint: Endpoint, body: &str, encoding: Encoding) -> u64 {
        let view = BodyView::parsed_now(endpoint, body.as_bytes());
        let output = Estimator {
            default_max_tokens: 100,
        }
        .output(endpoint, view.json());
        view.prompt_tokens_now(encoding).saturating_add(output)
    }

    #[test]
    fn chat_follows_openais_counting_rule() {
        // "Hello world" is 2 tokens in both encodings; "user" 1.
        let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}],"max_tokens":10}"#;
        // 3 (message) + 1 (role) + 2 (content) + 3 (reply) + 10 (max_tokens)
        assert_eq!(
            estimate(Endpoint::ChatCompletions, body, Encoding::O200k),
            19
        );
        let named = r#"{"messages":[{"role":"user","name":"bob","content":"Hello world"}],"max_completion_tokens":10,"n":2}"#;
        // + 1 + 1 ("bob") over the above, output twice
        assert_eq!(
            estimate(Endpoint::ChatCompletions, named, Encoding::O200k),
            9 + 2 + 20
        );
        let defaulted = r#"{"messages":[{"role":"user","content":"Hello world"}]}"#;
        assert_eq!(
            estimate(Endpoint::ChatCompletions, defaulted, Encoding::Cl100k),
            9 + 100
        );
    }

    #[test]
    fn huge_n_and_max_tokens_saturate_instead_of_wrapping() {
        let body = r#"{"messages":[],"max_tokens":4294967296,"n":4294967296}"#;
        assert_eq!(
            estimate(Endpoint::ChatCompletions, body, Encoding::O200k),
            u64::MAX
        );
    }

    #[test]
    fn embeddings_completions_and_responses() {
        assert_eq!(
            estimate(
                Endpoint::Embeddings,
                r#"{"input":["Hello world","Hello"]}"#,
                Encoding::Cl100k
            ),
            3
        );
        assert_eq!(
            estimate(
                Endpoint::Embeddings,
                r#"{"input":[[1,2,3],[4]]}"#,
                Encoding::Cl100k
            ),
            4
        );
        assert_eq!(
            estimate(
                Endpoint::Completions,
                r#"{"prompt":"Hello world","max_tokens":5}"#,
                Encoding::O200k
            ),
            7
        );
        assert_eq!(
            estimate(
                Endpoint::Responses,
                r#"{"input":"Hello world","max_output_tokens":5}"#,
                Encoding::O200k
            ),
            7
        );
    }

    #[test]
    fn encodings_by_model() {
        for model in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-5",
            "o3-mini",
            "unknown",
        ] {
            assert_eq!(Encoding::for_model(model), Encoding::O200k, "{model}");
        }
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "gpt-35-turbo",
            "text-embedding-3-small",
        ] {
            assert_eq!(Encoding::for_model(model), Encoding::Cl100k, "{model}");
        }
    }

    #[test]
    fn a_body_too_deep_to_parse_is_estimated_from_its_size() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body = format!(r#"{{"model":"m","messages":[],"tools":{deep}}}"#);
        let estimate = size_estimate(body.len());
        assert!(estimate >= 100);
        assert_eq!(
            self::estimate(Endpoint::ChatCompletions, &body, Encoding::O200k),
            estimate + 100
        );
    }
}
