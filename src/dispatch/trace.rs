//! Each upstream attempt as an OpenTelemetry client span, in the GenAI
//! semantic conventions: named `{gen_ai.operation.name} {gen_ai.request.model}`,
//! a child of the call's span, and the parent the upstream sees in its
//! `traceparent`. What the request asked (`gen_ai.request.*`) is read once
//! per call; what the answer says (`gen_ai.response.*`, `gen_ai.usage.*`)
//! is read from a whole body when the attempt ends, or from a stream's
//! events as the relay passes them. Nothing here runs for a call whose
//! trace is not sampled.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::outcome::FailureKind;
use crate::config::Provider;
use crate::infra::otel::{Attr, Kind, LiveSpan, Value};
use crate::infra::sse::usage;
use crate::infra::sse::{Event, Piece, Splitter};
use crate::upstream::Deployment;
use crate::util::text::prefix;
use crate::vocab::Endpoint;

/// A call's tracing as its attempts see it.
pub struct CallTracing {
    /// The call's span: each attempt's parent.
    pub span: LiveSpan,
    /// `gen_ai.request.*` (and the captured prompt), read once.
    pub request: Vec<Attr>,
}

impl CallTracing {
    pub fn new(span: LiveSpan, endpoint: Endpoint, body: &[u8]) -> Self {
        let request = if span.is_recording() {
            request_attrs(endpoint, body, span.tracer().content_cap())
        } else {
            Vec::new()
        };
        Self { span, request }
    }

    /// The span of attempt number `attempt` on `deployment`.
    pub fn attempt(
        &self,
        endpoint: Endpoint,
        deployment: &Deployment,
        upstream_model: &str,
        attempt: u32,
    ) -> LiveSpan {
        let operation = operation_name(endpoint);
        let name = if self.span.is_recording() {
            Cow::Owned(format!("{operation} {upstream_model}"))
        } else {
            Cow::Borrowed(operation)
        };
        let span = self.span.child(name, Kind::Client);
        span.record(|data| {
            data.set("gen_ai.operation.name", operation);
            data.set("gen_ai.provider.name", provider_name(deployment.provider));
            data.set("gen_ai.request.model", upstream_model.to_owned());
            if let Some((host, port)) = &deployment.address {
                data.set("server.address", host);
                data.set("server.port", i64::from(*port));
            }
            data.set("sluice.deployment", &deployment.name);
            data.set("sluice.attempt", i64::from(attempt));
            data.attrs.extend(self.request.iter().cloned());
        });
        span
    }
}

fn operation_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::ResponsesCompact => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        Endpoint::ImageGenerations | Endpoint::ImageEdits | Endpoint::ImageVariations => {
            "generate_content"
        }
        other => other.path(),
    }
}

fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => "openai",
        Provider::Azure => "azure.ai.openai",
        Provider::Anthropic => "anthropic",
        Provider::Mock => "sluice.mock",
    }
}

/// The request fields the conventions name, as sent (any spelling the
/// OpenAI APIs accept for the output cap).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Asked<'a> {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    max_output_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    seed: Option<i64>,
    n: Option<i64>,
    #[serde(borrow)]
    stop: Option<Stop<'a>>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

fn request_attrs(endpoint: Endpoint, body: &[u8], content_cap: Option<usize>) -> Vec<Attr> {
    let Ok(asked) = serde_json::from_slice::<Asked<'_>>(body) else {
        return Vec::new();
    };
    let mut attrs = Vec::new();
    let max = asked
        .max_completion_tokens
        .or(asked.max_tokens)
        .or(asked.max_output_tokens);
    let numbers = [
        ("gen_ai.request.temperature", asked.temperature),
        ("gen_ai.request.top_p", asked.top_p),
        ("gen_ai.request.frequency_penalty", asked.frequency_penalty),
        ("gen_ai.request.presence_penalty", asked.presence_penalty),
    ];
    for (key, value) in numbers {
        if let Some(value) = value {
            attrs.push((key, Value::Float(value)));
        }
    }
    for (key, value) in [
        ("gen_ai.request.max_tokens", max),
        ("gen_ai.request.seed", asked.seed),
        ("gen_ai.request.choice.count", asked.n),
    ] {
        if let Some(value) = value {
            attrs.push((key, Value::Int(value)));
        }
    }
    if let Some(stop) = asked.stop {
        // The client's strings, bounded like every echo.
        let list = match stop {
            Stop::One(one) => vec![one],
            Stop::Many(many) => many,
        };
        let list = list
            .into_iter()
            .take(MAX_LISTED)
            .map(|text| bounded(&text))
            .collect();
        attrs.push(("gen_ai.request.stop_sequences", Value::Strings(list)));
    }
    if let Some(cap) = content_cap {
        let prompt = match endpoint {
            Endpoint::ChatCompletions => asked.messages,
            Endpoint::Completions => asked.prompt,
            _ => asked.input.or(asked.messages),
        };
        if let Some(prompt) = prompt {
            attrs.push(("gen_ai.input.messages", capped(prompt.get(), cap)));
        }
    }
    attrs
}

/// Stop sequences and finish reasons kept, at most.
const MAX_LISTED: usize = 16;
/// The longest string from a request or an answer kept on a span (content
/// aside, which has its own cap).
const MAX_TEXT: usize = 256;

/// `text` cut to `MAX_TEXT` bytes on a character boundary.
fn bounded(text: &str) -> String {
    prefix(text, MAX_TEXT).to_owned()
}

/// `text` cut to `cap` bytes on a character boundary, marked when cut.
fn capped(text: &str, cap: usize) -> Value {
    if text.len() <= cap {
        return Value::from(text.to_owned());
    }
    Value::from(format!("{}…[truncated]", prefix(text, cap)))
}

/// Ends a failed attempt's span: `error.type` is the status the upstream
/// answered, or the gateway's own error code (`upstream_timeout`...).
pub fn failed(span: &LiveSpan, failure: &FailureKind) {
    span.record(|data| {
        let kind = match failure {
            FailureKind::Upstream { status, .. } => {
                data.set("http.response.status_code", i64::from(status.as_u16()));
                status.as_u16().to_string()
            }
            FailureKind::Gateway(error) => error.code().unwrap_or("gateway_error").to_owned(),
        };
        data.set("error.type", kind);
        data.error = Some(failure.to_string());
    });
    span.end();
}

/// What an answer says about itself, gathered from a whole body or from
/// a stream's events.
#[derive(Default)]
pub struct AnswerFacts {
    id: Option<String>,
    model: Option<String>,
    finish_reasons: Vec<String>,
    usage: Option<crate::vocab::Usage>,
    /// The answer's choices (or output), when content is captured.
    output: Option<Value>,
    /// A stream's events, cut by the SSE grammar.
    splitter: Option<Splitter>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Said<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    /// A Responses API stream's `response.*` events carry the response.
    #[serde(borrow)]
    response: Option<Box<Said<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Choice<'a> {
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

/// An SSE event longer than this is not read for facts.
const EVENT_LIMIT: usize = 256 * 1024;

impl AnswerFacts {
    /// For a stream: `scan` its chunks.
    pub fn streamed() -> Self {
        Self {
            splitter: Some(Splitter::new(EVENT_LIMIT)),
            ..Self::default()
        }
    }

    /// A whole JSON answer.
    pub fn of_body(body: &[u8], content_cap: Option<usize>) -> Self {
        let mut facts = Self::default();
        facts.absorb(body);
        if let Some(cap) = content_cap {
            facts.output = output_of(body).map(|raw| capped(raw.get(), cap));
        }
        facts
    }

    /// A relayed chunk of a stream.
    pub fn scan(&mut self, chunk: &[u8]) {
        let Some(mut splitter) = self.splitter.take() else {
            return;
        };
        splitter.feed(chunk, |piece| {
            if let Piece::Event(raw) = piece {
                let event = Event::parse(raw);
                if event.has_data && !event.is_done() {
                    self.absorb(&event.data);
                }
            }
        });
        self.splitter = Some(splitter);
    }

    fn absorb(&mut self, json: &[u8]) {
        if let Ok(said) = serde_json::from_slice::<Said<'_>>(json) {
            self.take(said);
        }
        if memchr::memmem::find(json, b"\"usage\"").is_some()
            && let Some(found) = usage::parse(json)
        {
            self.usage = Some(found);
        }
    }

    fn take(&mut self, said: Said<'_>) {
        if self.id.is_none() {
            self.id = said.id.as_deref().map(bounded);
        }
        if self.model.is_none() {
            self.model = said.model.as_deref().map(bounded);
        }
        for reason in said.choices.into_iter().filter_map(|c| c.finish_reason) {
            if self.finish_reasons.len() < MAX_LISTED {
                self.finish_reasons.push(bounded(&reason));
            }
        }
        if let Some(status) = said.status.filter(|s| s != "in_progress" && s != "queued") {
            self.finish_reasons = vec![bounded(&status)];
        }
        if let Some(response) = said.response {
            self.take(*response);
        }
    }

    /// Sets the facts on `span` (and the status the upstream answered).
    pub fn record_on(self, span: &LiveSpan) {
        span.record(|data| {
            if let Some(id) = self.id {
                data.set("gen_ai.response.id", id);
            }
            if let Some(model) = self.model {
                data.set("gen_ai.response.model", model);
            }
            if !self.finish_reasons.is_empty() {
                data.set(
                    "gen_ai.response.finish_reasons",
                    Value::Strings(self.finish_reasons),
                );
            }
            if let Some(usage) = self.usage {
                data.set("gen_ai.usage.input_tokens", usage.prompt_tokens);
                data.set("gen_ai.usage.output_tokens", usage.completion_tokens);
                data.set("gen_ai.usage.cache_read.input_tokens", usage.cached_tokens);
            }
            if let Some(output) = self.output {
                data.set("gen_ai.output.messages", output);
            }
        });
    }
}

/// A whole answer's `choices` (chat, completions) or `output` (Responses).
fn output_of(body: &[u8]) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct Output<'a> {
        #[serde(borrow)]
        choices: Option<&'a RawValue>,
        #[serde(borrow)]
        output: Option<&'a RawValue>,
    }
    let output: Output<'_> = serde_json::from_slice(body).ok()?;
    output.choices.or(output.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_conventions_request_fields() {
        let body = br#"{"model":"m","max_completion_tokens":50,"temperature":0.2,"stop":"x","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
        let attrs = request_attrs(Endpoint::ChatCompletions, body, Some(10));
        let get = |key| {
            attrs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("gen_ai.request.max_tokens"), Some(Value::Int(50)));
        assert_eq!(get("gen_ai.request.temperature"), Some(Value::Float(0.2)));
        assert_eq!(get("gen_ai.request.choice.count"), Some(Value::Int(2)));
        assert_eq!(
            get("gen_ai.request.stop_sequences"),
            Some(Value::Strings(vec!["x".into()]))
        );
        assert_eq!(
            get("gen_ai.input.messages"),
            Some(Value::from("[{\"role\":\"…[truncated]".to_owned()))
        );
        assert!(request_attrs(Endpoint::ChatCompletions, b"{", None).is_empty());
    }

    #[test]
    fn gathers_a_stream_however_it_is_cut() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"model\":\"gpt-x\",\"choices\":[{\"delta\":{}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
            "data: [DONE]\n\n"
        );
        for cut in [1, 7, 50, stream.len()] {
            let mut facts = AnswerFacts::streamed();
            for chunk in stream.as_bytes().chunks(cut) {
                facts.scan(chunk);
            }
            assert_eq!(facts.id.as_deref(), Some("c1"));
            assert_eq!(facts.model.as_deref(), Some("gpt-x"));
            assert_eq!(facts.finish_reasons, vec!["stop".to_owned()]);
            assert_eq!(facts.usage.map(|u| u.total()), Some(7));
        }
    }

    #[test]
    fn reads_a_responses_api_answer() {
        let body = br#"{"id":"resp_1","model":"m","status":"completed","output":[],"usage":{"input_tokens":2,"output_tokens":1}}"#;
        let facts = AnswerFacts::of_body(body, Some(100));
        assert_eq!(facts.finish_reasons, vec!["completed".to_owned()]);
        assert_eq!(facts.output, Some(Value::from("[]".to_owned())));
        assert_eq!(facts.usage.map(|u| u.total()), Some(3));
    }
}
