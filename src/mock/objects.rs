//! The mock account's stored objects other than responses: conversations
//! and their items, stored chat completions and their messages, and the
//! generic kinds (vector stores, containers, fine-tuning jobs, evals), made,
//! read, updated, listed and deleted as one OpenAI account does. Bounded in
//! count and age; another mock deployment does not know the ids, like
//! another provider account.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::answer::random_id;
use super::json_reply;
use crate::upstream::UpstreamResponse;
use crate::util::text::clip;
use crate::vocab::StoredCall;
use crate::vocab::error::error_body;

/// Items a conversation or a stored chat completion keeps.
const MAX_ITEMS: usize = 1_000;

/// One stored object: what it answers with, and its items (a
/// conversation's items, a stored chat completion's messages).
struct Stored {
    collection: &'static str,
    object: Value,
    items: Vec<Value>,
    /// Creation order, for lists (`created_at` has one-second steps).
    sequence: u64,
}

#[derive(Clone)]
pub struct MockObjects {
    stored: moka::sync::Cache<String, Arc<Mutex<Stored>>>,
    sequence: Arc<AtomicU64>,
}

impl Default for MockObjects {
    fn default() -> Self {
        Self {
            stored: super::account_cache(),
            sequence: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// How each kind's objects are named and shaped.
struct Kind {
    collection: &'static str,
    prefix: &'static str,
    object: &'static str,
}

const KINDS: [Kind; 6] = [
    Kind {
        collection: "conversations",
        prefix: "conv_",
        object: "conversation",
    },
    Kind {
        collection: "chat/completions",
        prefix: "chatcmpl-",
        object: "chat.completion",
    },
    Kind {
        collection: "vector_stores",
        prefix: "vs_",
        object: "vector_store",
    },
    Kind {
        collection: "containers",
        prefix: "cntr_",
        object: "container",
    },
    Kind {
        collection: "fine_tuning/jobs",
        prefix: "ftjob-",
        object: "fine_tuning.job",
    },
    Kind {
        collection: "evals",
        prefix: "eval_",
        object: "eval",
    },
];

impl MockObjects {
    /// Answers a call on an object (or a collection) of a kind other than
    /// responses.
    pub fn answer(&self, call: &StoredCall, body: &[u8]) -> UpstreamResponse {
        let collection = call.resource.collection;
        let Some(kind) = KINDS.iter().find(|kind| kind.collection == collection) else {
            return not_found("Invalid URL.");
        };
        let rest = call
            .path
            .strip_prefix(collection)
            .unwrap_or_default()
            .trim_start_matches('/');
        let query = call.query.as_deref().unwrap_or_default();
        let request = serde_json::from_slice::<Value>(body).unwrap_or_else(|_| json!({}));
        let mut segments = rest.splitn(3, '/');
        let (id, action, item) = (
            segments.next().unwrap_or_default(),
            segments.next().unwrap_or_default(),
            segments.next(),
        );
        match (&call.method, id, action) {
            (&Method::POST, "", _) => ok(&self.create(kind, &request)),
            (&Method::GET, "", _) => ok(&self.list(kind, query)),
            _ => self.on_object(kind, call, id, action, item, &request),
        }
    }

    fn on_object(
        &self,
        kind: &Kind,
        call: &StoredCall,
        id: &str,
        action: &str,
        item: Option<&str>,
        request: &Value,
    ) -> UpstreamResponse {
        let Some(stored) = self.stored.get(id).filter(|stored| {
            stored
                .lock()
                .is_ok_and(|stored| stored.collection == kind.collection)
        }) else {
            return not_found(&format!(
                "{} with id '{}' not found.",
                call.resource.noun,
                clip(id)
            ));
        };
        let Ok(mut stored) = stored.lock() else {
            return not_found("Invalid URL.");
        };
        let query = call.query.as_deref().unwrap_or_default();
        match (&call.method, action, item) {
            (&Method::GET, "", None) => ok(&stored.object),
            (&Method::POST, "", None) => {
                merge(&mut stored.object, request);
                ok(&stored.object)
            }
            (&Method::DELETE, "", None) => {
                self.stored.invalidate(id);
                ok(
                    &json!({"id": id, "object": format!("{}.deleted", kind.object), "deleted": true}),
                )
            }
            (&Method::GET, "items" | "messages", None) => ok(&page(&stored.items, query, "asc")),
            (&Method::POST, "items", None) => {
                let added = add_items(&mut stored.items, &request["items"]);
                ok(&page(&added, "", "asc"))
            }
            (&Method::GET, "items", Some(item)) => match find_item(&stored.items, item) {
                Some(found) => ok(found),
                None => not_found(&format!("Item with id '{}' not found.", clip(item))),
            },
            (&Method::DELETE, "items", Some(item)) => {
                stored
                    .items
                    .retain(|kept| kept.get("id").and_then(Value::as_str) != Some(item));
                ok(&stored.object)
            }
            (&Method::POST, "cancel", None) => {
                stored.object["status"] = "cancelled".into();
                ok(&stored.object)
            }
            // Events, checkpoints, files: none in a mock account.
            (&Method::GET, _, _) => ok(&page(&[], "", "asc")),
            _ => not_found("Invalid URL."),
        }
    }

    fn create(&self, kind: &Kind, request: &Value) -> Value {
        let id = format!("{}{}", kind.prefix, random_id());
        let mut object = json!({"id": id, "object": kind.object, "created_at": now()});
        let mut items = Vec::new();
        if let Value::Object(fields) = request {
            for (name, value) in fields {
                if name == "items" {
                    add_items(&mut items, value);
                } else if object.get(name).is_none() {
                    object[name] = value.clone();
                }
            }
        }
        if let (Value::Object(fields), Value::Object(defaults)) = (&mut object, defaults(kind)) {
            for (name, value) in defaults {
                fields.entry(name).or_insert(value);
            }
        }
        self.keep(kind.collection, &id, object.clone(), items);
        object
    }

    fn keep(&self, collection: &'static str, id: &str, object: Value, items: Vec<Value>) {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let stored = Stored {
            collection,
            object,
            items,
            sequence,
        };
        self.stored
            .insert(id.to_owned(), Arc::new(Mutex::new(stored)));
    }

    fn list(&self, kind: &Kind, query: &str) -> Value {
        let mut objects: Vec<(u64, Value)> = self
            .stored
            .iter()
            .filter_map(|(_, stored)| {
                let stored = stored.lock().ok()?;
                (stored.collection == kind.collection)
                    .then(|| (stored.sequence, stored.object.clone()))
            })
            .collect();
        objects.sort_by_key(|(sequence, _)| *sequence);
        let objects: Vec<Value> = objects.into_iter().map(|(_, object)| object).collect();
        page(&objects, query, "desc")
    }

    /// Remembers a chat completion made with `store: true`, and the
    /// messages it answered.
    pub fn keep_chat(&self, completion: &Value, request: &Value) {
        let Some(id) = completion.get("id").and_then(Value::as_str) else {
            return;
        };
        // As the API lists them: `{id}-{index}`, the content as text and
        // the parts it was given in `content_parts`.
        let messages: Vec<Value> = request["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .take(MAX_ITEMS)
            .enumerate()
            .map(|(index, message)| {
                let (content, parts) = match &message["content"] {
                    Value::String(text) => (json!(text), Value::Null),
                    Value::Array(parts) => {
                        let text: String = parts
                            .iter()
                            .filter_map(|part| part["text"].as_str())
                            .collect();
                        (json!(text), json!(parts))
                    }
                    _ => (Value::Null, Value::Null),
                };
                json!({"id": format!("{id}-{index}"), "role": message["role"], "content": content,
                       "name": message.get("name"), "content_parts": parts, "refusal": null})
            })
            .collect();
        let mut object = completion.clone();
        object["metadata"] = request.get("metadata").cloned().unwrap_or(json!({}));
        self.keep("chat/completions", id, object, messages);
    }

    /// Whether `id` is a conversation of this account.
    pub fn has_conversation(&self, id: &str) -> bool {
        self.stored.get(id).is_some_and(|stored| {
            stored
                .lock()
                .is_ok_and(|stored| stored.collection == "conversations")
        })
    }

    /// Appends a response's input or output items to its conversation.
    pub fn append_to_conversation(&self, id: &str, items: &Value) {
        if let Some(stored) = self.stored.get(id)
            && let Ok(mut stored) = stored.lock()
        {
            add_items(&mut stored.items, items);
        }
    }
}

/// The fields OpenAI's object of each kind always has, as a new one has them.
fn defaults(kind: &Kind) -> Value {
    let now = now();
    match kind.object {
        "vector_store" => json!({
            "name": "", "usage_bytes": 0, "status": "completed", "last_active_at": now,
            "file_counts": {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0},
            "metadata": {},
        }),
        "container" => json!({"name": "", "status": "running"}),
        "fine_tuning.job" => json!({
            "error": null, "finished_at": null, "fine_tuned_model": null,
            "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
            "organization_id": "org-mock", "result_files": [], "status": "queued",
            "trained_tokens": null, "training_file": "", "validation_file": null, "seed": 0,
            "metadata": {},
        }),
        "eval" => {
            json!({"name": "", "data_source_config": {}, "testing_criteria": [], "metadata": {}})
        }
        _ => json!({"metadata": {}}),
    }
}

/// Items as given (a string is one user message), each with an id.
fn add_items(items: &mut Vec<Value>, given: &Value) -> Vec<Value> {
    let given = match given {
        Value::String(text) => vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]
        })],
        Value::Array(given) => given.clone(),
        _ => Vec::new(),
    };
    let mut added = Vec::new();
    for mut item in given {
        if items.len() >= MAX_ITEMS {
            break;
        }
        if let Value::Object(fields) = &mut item {
            fields
                .entry("id")
                .or_insert_with(|| json!(format!("msg_{}", random_id())));
            if fields.contains_key("role") {
                fields.entry("type").or_insert_with(|| json!("message"));
                // A string is stored as OpenAI stores it: one text part.
                if let Some(Value::String(text)) = fields.get("content") {
                    let kind = if fields["role"] == "assistant" {
                        "output_text"
                    } else {
                        "input_text"
                    };
                    let parts = json!([{"type": kind, "text": text}]);
                    fields.insert("content".into(), parts);
                }
            }
            fields.entry("status").or_insert_with(|| json!("completed"));
        }
        items.push(item.clone());
        added.push(item);
    }
    added
}

fn find_item<'a>(items: &'a [Value], id: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|item| item.get("id").and_then(Value::as_str) == Some(id))
}

/// A list page as OpenAI pages: `order` (`asc` or `desc`), `after` an id,
/// `limit` (1 to 100, 20 by default).
fn page(items: &[Value], query: &str, default_order: &str) -> Value {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let limit = param("limit")
        .and_then(|limit| limit.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let mut ordered: Vec<&Value> = items.iter().collect();
    if param("order").unwrap_or(default_order) == "desc" {
        ordered.reverse();
    }
    if let Some(after) = param("after")
        && let Some(at) = ordered
            .iter()
            .position(|item| item.get("id").and_then(Value::as_str) == Some(after))
    {
        ordered.drain(..=at);
    }
    let has_more = ordered.len() > limit;
    ordered.truncate(limit);
    let id = |item: Option<&&Value>| item.and_then(|item| item.get("id")).cloned();
    json!({
        "object": "list",
        "first_id": id(ordered.first()),
        "last_id": id(ordered.last()),
        "data": ordered,
        "has_more": has_more,
    })
}

/// An update: `metadata` and the other fields given replace the object's.
fn merge(object: &mut Value, update: &Value) {
    let (Value::Object(object), Value::Object(update)) = (object, update) else {
        return;
    };
    let fixed = ["id", "object", "created_at"];
    let fields: Map<String, Value> = update
        .iter()
        .filter(|(name, _)| !fixed.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    object.extend(fields);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn ok(value: &Value) -> UpstreamResponse {
    json_reply(StatusCode::OK, Bytes::from(value.to_string()))
}

fn not_found(message: &str) -> UpstreamResponse {
    json_reply(
        StatusCode::NOT_FOUND,
        error_body(message, "invalid_request_error", None, None),
    )
}
