//! What a call does to the objects kept upstream: a create pins the new
//! object's id to the deployment that made it (`pins`), and a list shows
//! only the caller's objects, because one provider account holds every
//! key's.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::call::ApiRequest;
use crate::engines::routing::ResponsePins;
use crate::vocab::Endpoint;

/// The caller's part in what the call keeps or lists.
#[derive(Default)]
pub struct Keeping {
    /// The owner of the object the call makes, to pin its id.
    pub pin: Option<Arc<str>>,
    /// The caller a list is for, to filter its answer.
    pub list_for: Option<Arc<str>>,
}

impl Keeping {
    pub fn of(api: &ApiRequest, caller: &Arc<str>) -> Self {
        let stored = api.stored.as_ref();
        let on_collection = |method| {
            stored.is_some_and(|call| {
                call.method == method && *call.path == *call.resource.collection
            })
        };
        let makes = match api.endpoint {
            Endpoint::Responses => true,
            Endpoint::ChatCompletions => api.store,
            Endpoint::Stored => on_collection(http::Method::POST),
            _ => false,
        };
        let lists = api.endpoint == Endpoint::Stored && on_collection(http::Method::GET);
        Self {
            pin: makes.then(|| caller.clone()),
            list_for: lists.then(|| caller.clone()),
        }
    }
}

/// A list answer with only `caller`'s objects in `data` (`first_id` and
/// `last_id` follow). An answer that is not a list object shows nothing
/// rather than risk showing another key's objects.
pub async fn only_callers(body: &[u8], pins: &ResponsePins, caller: &str) -> Bytes {
    let mut list = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(list)) if list.get("data").is_some_and(Value::is_array) => list,
        _ => return empty_list(),
    };
    let Some(Value::Array(items)) = list.remove("data") else {
        return empty_list();
    };
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        // A store that cannot answer shows nothing for that id.
        if let Ok(Some(pin)) = pins.find(id).await
            && *pin.owner == *caller
        {
            kept.push(item);
        }
    }
    let id_of = |item: Option<&Value>| {
        item.and_then(|item| item.get("id"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    if list.contains_key("first_id") {
        list.insert("first_id".into(), id_of(kept.first()));
    }
    if list.contains_key("last_id") {
        list.insert("last_id".into(), id_of(kept.last()));
    }
    list.insert("data".into(), Value::Array(kept));
    Bytes::from(Value::Object(list).to_string())
}

fn empty_list() -> Bytes {
    let mut list = Map::new();
    list.insert("object".into(), "list".into());
    list.insert("data".into(), Value::Array(Vec::new()));
    list.insert("has_more".into(), false.into());
    Bytes::from(Value::Object(list).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResponsesConfig;
    use crate::engines::routing::ResponsePin;

    fn pin(owner: &str) -> ResponsePin {
        ResponsePin {
            deployment: Arc::from("d"),
            model: Arc::from("m"),
            owner: Arc::from(owner),
        }
    }

    #[tokio::test]
    async fn a_list_shows_only_the_callers_objects() {
        let pins = ResponsePins::new(&ResponsesConfig::default(), None);
        pins.remember("vs_a", pin("alice"));
        pins.remember("vs_b", pin("bob"));
        pins.remember("vs_c", pin("alice"));
        let answer = br#"{"object":"list","data":[{"id":"vs_a"},{"id":"vs_b"},{"id":"vs_c"},{"id":"vs_other"}],"first_id":"vs_a","last_id":"vs_other","has_more":true}"#;
        let shown: Value =
            serde_json::from_slice(&only_callers(answer, &pins, "alice").await).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"object":"list","data":[{"id":"vs_a"},{"id":"vs_c"}],"first_id":"vs_a","last_id":"vs_c","has_more":true})
        );
        let none: Value =
            serde_json::from_slice(&only_callers(b"<html>", &pins, "alice").await).unwrap();
        assert_eq!(none["data"], serde_json::json!([]));
    }
}
