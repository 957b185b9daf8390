//! W3C trace context as a caller sends it: the input's first line is a
//! `traceparent` value, every further line a `tracestate` header. Any bytes
//! must give no context or one that spells back to a `traceparent` the
//! grammar reads as the same ids, with a bounded `tracestate`; never a panic.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice::infra::otel::ids::{parse_traceparent, remote_parent};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let parsed = parse_traceparent(first);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(first) {
        headers.insert("traceparent", value);
    }
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("tracestate", value);
        }
    }
    let Some(context) = remote_parent(&headers) else {
        return;
    };
    let (trace_id, span_id, _) = parsed.expect("a header value the grammar refused was taken");
    assert_eq!((context.trace_id, context.span_id), (trace_id, span_id));
    let spelled = context.traceparent();
    let again = parse_traceparent(spelled.as_bytes()).expect("its own spelling reads back");
    assert_eq!((again.0, again.1), (trace_id, span_id));
    if let Some(state) = context.trace_state {
        assert!(state.len() <= 512, "{}", state.len());
    }
});
