//! Anthropic's Messages API as a client sends it, and a chat stream as an
//! upstream sends it. Any bytes must be a refusal or a chat request with a
//! model and messages, and any JSON object a refusal or an estimate view
//! (the relay's) with one message holding text; any lines fed to the stream translation must come
//! out as whole, named Anthropic events in the stream's grammar, ending
//! once; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice::anthropic::{StreamTranslator, estimate_view, to_chat};

fuzz_target!(|data: &[u8]| {
    if let Ok(chat) = to_chat(data) {
        assert!(chat.body.get("model").is_some_and(Value::is_string));
        let messages = chat.body.get("messages").and_then(Value::as_array);
        assert!(messages.is_some_and(|messages| !messages.is_empty()));
        assert_eq!(chat.body.get("stream").is_some(), chat.stream);
    }
    if let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(data)
        && let Ok(view) = estimate_view(&request)
    {
        assert!(view.body.get("model").is_some_and(Value::is_string));
        assert!(view.body["messages"][0]["content"].is_string());
        assert_eq!(view.body.get("stream").is_some(), view.stream);
    }
    let mut stream = StreamTranslator::default();
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        stream.chunk(line, &mut out);
    }
    stream.end(&mut out);
    assert!(stream.is_closed());
    let text = std::str::from_utf8(&out).expect("events are UTF-8");
    let events: Vec<Value> = text
        .split_terminator("\n\n")
        .map(|event| {
            let (name, data) = event.split_once("\ndata: ").expect("an event and its data");
            let data: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(name.strip_prefix("event: "), data["type"].as_str());
            data
        })
        .collect();
    check_grammar(&events);
});

/// `message_start` first (unless the stream failed at once), blocks
/// started in index order, each delta and stop naming a started block,
/// one block open at a time, and the stream's end last.
fn check_grammar(events: &[Value]) {
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let last = kinds.last().copied();
    assert!(matches!(last, Some("message_stop" | "error")), "{kinds:?}");
    assert!(kinds[..kinds.len() - 1].iter().all(|k| !matches!(*k, "message_stop" | "error")));
    if last == Some("message_stop") {
        assert_eq!(kinds[0], "message_start");
    }
    let (mut started, mut open) = (0u64, None);
    for event in events {
        let index = event["index"].as_u64();
        match event["type"].as_str() {
            Some("content_block_start") => {
                assert_eq!((index, open), (Some(started), None), "{event}");
                open = index;
                started += 1;
            }
            Some("content_block_delta") => assert!(index.is_some_and(|i| i < started)),
            Some("content_block_stop") => {
                assert_eq!(index, open, "{event}");
                open = None;
            }
            Some("message_delta") => assert_eq!(open, None),
            _ => {}
        }
    }
}
