//! One generated answer: its choices (text, JSON or a tool call), counted
//! in the model's tokens. The content is a function of the request alone, so
//! the same question gets the same answer streamed or not; ids are fresh.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tiktoken_rs::CoreBPE;

use super::request::{Plan, Shape};
use super::schema;
use super::text::{Tokenized, sentence};

pub struct Call {
    pub id: String,
    pub name: String,
}

pub struct Choice {
    /// Set when the choice calls a function; `text` then holds its arguments.
    pub call: Option<Call>,
    pub text: Tokenized,
}

pub struct Answer {
    /// Random, as the API's are; prefixes (`chatcmpl-`, `resp_`) are added
    /// by each endpoint.
    pub id: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub prompt_tokens: u64,
    /// Alternatives per token when log probabilities were asked for.
    pub logprobs: Option<usize>,
    /// How many stream pieces each choice is sent in.
    pub pieces: usize,
}

/// What an answer is made from, besides the plan.
pub struct Inputs<'a> {
    pub model: &'a str,
    pub seed: u64,
    pub bpe: &'static CoreBPE,
    pub prompt_tokens: u64,
    /// Words in a text answer and pieces in a stream.
    pub chunks: usize,
}

impl Answer {
    pub fn new(plan: &Plan, inputs: &Inputs<'_>) -> Self {
        let choices = (0..plan.n)
            .map(|index| {
                // Each choice its own stream of numbers: distinct, repeatable.
                let seed = inputs.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rng = fastrand::Rng::with_seed(seed);
                let (call, content) = match &plan.shape {
                    Shape::Text => (None, sentence(&mut rng, inputs.chunks)),
                    Shape::Json(Value::Null) => (
                        None,
                        json!({"answer": sentence(&mut rng, inputs.chunks)}).to_string(),
                    ),
                    Shape::Json(schema) => (None, schema::generate(schema, &mut rng).to_string()),
                    Shape::Call { name, parameters } => (
                        Some(Call {
                            id: format!("call_{}", random_id()),
                            name: name.clone(),
                        }),
                        schema::generate(parameters, &mut rng).to_string(),
                    ),
                };
                Choice {
                    call,
                    text: Tokenized::new(content, inputs.bpe, &mut rng),
                }
            })
            .collect();
        Self {
            id: random_id(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: inputs.model.to_owned(),
            choices,
            prompt_tokens: inputs.prompt_tokens,
            logprobs: plan.logprobs,
            pieces: inputs.chunks,
        }
    }

    pub fn completion_tokens(&self) -> u64 {
        self.choices
            .iter()
            .map(|c| c.text.tokens.len() as u64)
            .sum()
    }

    pub fn chat_usage(&self) -> Value {
        let (prompt, completion) = (self.prompt_tokens, self.completion_tokens());
        json!({
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }

    pub fn responses_usage(&self) -> Value {
        let (input, output) = (self.prompt_tokens, self.completion_tokens());
        json!({
            "input_tokens": input, "output_tokens": output, "total_tokens": input + output,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}
        })
    }
}

/// 24 random alphanumerics: unique per call like the API's ids.
pub fn random_id() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect()
}
