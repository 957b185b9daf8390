//! The mock's Realtime sessions: text in, text out, with the events the
//! GA API sends (or the beta API's names, when the client asked for it with
//! `OpenAI-Beta: realtime=v1`): `session.created` first; a session update,
//! an item added, an audio buffer committed, and a response made of
//! `response.output_text.delta` events ending in `response.done` with its
//! `usage`, counted with the model's tokenizer. A malformed event gets an
//! `error` event, as from OpenAI.

use serde_json::{Value, json};

use super::answer::random_id;
use super::text::sentence;
use crate::engines::tokens::Encoding;
use crate::upstream::LocalSession;

/// Words in an answer.
const ANSWER_WORDS: usize = 12;
/// Text deltas an answer is sent in.
const DELTAS: usize = 4;

pub struct MockSession {
    model: String,
    beta: bool,
    session: Value,
    /// The conversation's text so far, counted as each response's input.
    conversation: Vec<String>,
    rng: fastrand::Rng,
}

impl MockSession {
    pub fn new(model: &str, beta: bool) -> Self {
        let session = json!({
            "id": format!("sess_{}", random_id()),
            "object": "realtime.session",
            "type": "realtime",
            "model": model,
            "output_modalities": ["text"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
        });
        Self {
            model: model.to_owned(),
            beta,
            session,
            conversation: Vec::new(),
            rng: fastrand::Rng::with_seed(model.len() as u64),
        }
    }

    fn event(&self, kind: &str, mut fields: Value) -> String {
        fields["type"] = kind.into();
        fields["event_id"] = format!("event_{}", random_id()).into();
        fields.to_string()
    }

    fn named<'a>(&self, ga: &'a str, beta: &'a str) -> &'a str {
        if self.beta { beta } else { ga }
    }

    fn update_session(&mut self, event: &Value) -> Vec<String> {
        if let (Value::Object(session), Some(Value::Object(update))) =
            (&mut self.session, event.get("session"))
        {
            for (name, value) in update {
                if name != "id" && name != "object" {
                    session.insert(name.clone(), value.clone());
                }
            }
        }
        vec![self.event("session.updated", json!({"session": self.session}))]
    }

    fn add_item(&mut self, event: &Value) -> Vec<String> {
        let mut item = event.get("item").cloned().unwrap_or_else(|| json!({}));
        item["id"] = format!("item_{}", random_id()).into();
        item["status"] = "completed".into();
        if let Some(parts) = item.get("content").and_then(Value::as_array) {
            let text: Vec<&str> = parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            self.conversation.push(text.join(" "));
        }
        let added = self.named("conversation.item.added", "conversation.item.created");
        let mut events = vec![self.event(added, json!({"previous_item_id": null, "item": item}))];
        if !self.beta {
            events.push(self.event("conversation.item.done", json!({"item": item})));
        }
        events
    }

    fn respond(&mut self) -> Vec<String> {
        let response_id = format!("resp_{}", random_id());
        let item_id = format!("item_{}", random_id());
        let text = sentence(&mut self.rng, ANSWER_WORDS);
        let bpe = Encoding::for_model(&self.model).bpe();
        let input_tokens = self
            .conversation
            .iter()
            .map(|text| bpe.count_ordinary(text) as u64 + 4)
            .sum::<u64>();
        let output_tokens = bpe.count_ordinary(&text) as u64;
        self.conversation.push(text.clone());
        let ids = json!({"response_id": response_id, "item_id": item_id, "output_index": 0});
        let with = |extra: Value| {
            let mut fields = ids.clone();
            if let (Value::Object(fields), Value::Object(extra)) = (&mut fields, extra) {
                fields.extend(extra);
            }
            fields
        };
        let part = json!({"type": "text", "text": text});
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message",
                          "status": "completed", "role": "assistant", "content": [part]});
        let mut events = vec![
            self.event("response.created", json!({"response": {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}})),
            self.event("response.output_item.added", json!({"response_id": response_id, "output_index": 0, "item": {"id": item_id, "type": "message", "role": "assistant", "content": [], "status": "in_progress"}})),
            self.event("response.content_part.added", with(json!({"content_index": 0, "part": {"type": "text", "text": ""}}))),
        ];
        let delta = self.named("response.output_text.delta", "response.text.delta");
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for chunk in words.chunks(words.len().div_ceil(DELTAS).max(1)) {
            events.push(self.event(
                delta,
                with(json!({"content_index": 0, "delta": chunk.concat()})),
            ));
        }
        let done = self.named("response.output_text.done", "response.text.done");
        events.push(self.event(done, with(json!({"content_index": 0, "text": text}))));
        events.push(self.event(
            "response.content_part.done",
            with(json!({"content_index": 0, "part": part})),
        ));
        events.push(self.event(
            "response.output_item.done",
            json!({"response_id": response_id, "output_index": 0, "item": item}),
        ));
        let usage = json!({
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
        });
        events.push(self.event(
            "response.done",
            json!({"response": {
                "id": response_id, "object": "realtime.response", "status": "completed",
                "output": [item], "usage": usage,
            }}),
        ));
        events
    }

    fn error(&self, message: &str, client_event: Option<&str>) -> Vec<String> {
        vec![self.event(
            "error",
            json!({"error": {
                "type": "invalid_request_error", "code": "invalid_value",
                "message": message, "param": null, "event_id": client_event,
            }}),
        )]
    }
}

impl LocalSession for MockSession {
    fn opening(&mut self) -> Vec<String> {
        vec![self.event("session.created", json!({"session": self.session}))]
    }

    fn on_client(&mut self, text: &str) -> Vec<String> {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            return self.error("The event is not valid JSON.", None);
        };
        let client_event = event.get("event_id").and_then(Value::as_str);
        match event.get("type").and_then(Value::as_str) {
            Some("session.update") => self.update_session(&event),
            Some("conversation.item.create") => self.add_item(&event),
            Some("response.create") => self.respond(),
            Some("input_audio_buffer.append" | "response.cancel") => Vec::new(),
            Some("input_audio_buffer.commit") => vec![self.event(
                "input_audio_buffer.committed",
                json!({"previous_item_id": null, "item_id": format!("item_{}", random_id())}),
            )],
            Some(other) => {
                let message = format!("Invalid value: '{}'.", crate::util::text::clip(other));
                self.error(&message, client_event)
            }
            None => self.error("The event has no `type`.", client_event),
        }
    }
}

/// A client secret for a browser's session (`realtime/client_secrets`), or
/// the beta API's session object carrying one (`realtime/sessions`).
pub fn client_secret(endpoint: crate::vocab::Endpoint, model: &str, request: &Value) -> Value {
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
        + 600;
    let secret = format!("ek_mock_{}", random_id());
    let mut session = request
        .get("session")
        .cloned()
        .unwrap_or_else(|| request.clone());
    session["model"] = model.into();
    session["id"] = format!("sess_{}", random_id()).into();
    session["object"] = "realtime.session".into();
    match endpoint {
        crate::vocab::Endpoint::RealtimeSessions => {
            session["client_secret"] = json!({"value": secret, "expires_at": expires_at});
            session
        }
        _ => {
            session["type"] = "realtime".into();
            json!({"value": secret, "expires_at": expires_at, "session": session})
        }
    }
}
