//! Anthropic's Messages API as a client sends it, and a chat stream as an
//! upstream sends it. Any bytes must be a refusal or a chat request with a
//! model and messages; any lines fed to the stream translation must come
//! out as whole, named Anthropic events, ending once; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice::anthropic::{StreamTranslator, to_chat};

fuzz_target!(|data: &[u8]| {
    if let Ok(chat) = to_chat(data) {
        assert!(chat.body.get("model").is_some_and(Value::is_string));
        let messages = chat.body.get("messages").and_then(Value::as_array);
        assert!(messages.is_some_and(|messages| !messages.is_empty()));
        assert_eq!(chat.body.get("stream").is_some(), chat.stream);
    }
    let mut stream = StreamTranslator::default();
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        stream.chunk(line, &mut out);
    }
    stream.end(&mut out);
    assert!(stream.is_closed());
    let text = std::str::from_utf8(&out).expect("events are UTF-8");
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    for event in &events {
        let (name, data) = event.split_once("\ndata: ").expect("an event and its data");
        let data: Value = serde_json::from_str(data).expect("data is JSON");
        assert_eq!(name.strip_prefix("event: "), data["type"].as_str());
    }
    let last = events.last().and_then(|e| e.split('\n').next());
    assert!(matches!(last, Some("event: message_stop" | "event: error")), "{last:?}");
});
