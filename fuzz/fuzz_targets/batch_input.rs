//! A batch input file, as the gateway reads it from disk: split into lines
//! (`\n` or `\r\n`, capped at `MAX_LINE_BYTES`), each checked as a request
//! line, keyed by its prompt prefix, and answered as an output line.
//! Properties: nothing panics; the lines read are the input's, in order;
//! every accepted line's `custom_id` is unique; an output line is JSON that
//! gives back the `custom_id` it was made with.
#![no_main]

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::{Lines, Models, Read, check_line, output_line, prefix_key};

/// Runs a future over an in-memory reader, which never waits.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = Lines::new(data);
    let mut seen = HashSet::new();
    let mut model = Models::default();
    let mut rebuilt: Vec<u8> = Vec::new();
    let usable = |name: &str| name.starts_with("gpt");
    loop {
        match ready(lines.next()).expect("an in-memory read cannot fail") {
            Read::End => break,
            Read::TooLong => return,
            Read::Line(line) => {
                rebuilt.extend_from_slice(line);
                rebuilt.push(b'\n');
                let before = seen.len();
                let problem =
                    check_line(line, "/v1/chat/completions", &usable, &mut seen, &mut model);
                if problem.is_none() {
                    assert_eq!(
                        seen.len(),
                        before + 1,
                        "an accepted line adds its custom_id"
                    );
                }
                let _ = prefix_key(line);
            }
        }
    }
    // Every line came back, one carriage return before each end aside.
    let mut pieces: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    if data.is_empty() || data.ends_with(b"\n") {
        pieces.pop();
    }
    let mut expected = Vec::new();
    for piece in pieces {
        expected.extend_from_slice(piece.strip_suffix(b"\r").unwrap_or(piece));
        expected.push(b'\n');
    }
    assert_eq!(rebuilt, expected, "lines read differ from the input");
    if let Ok(custom_id) = std::str::from_utf8(data) {
        let line = output_line("batch_req_1", custom_id, 200, "req_1", data);
        // Read as raw JSON: a body with a number past f64's range is still
        // JSON, which a `Value` would refuse.
        #[derive(serde::Deserialize)]
        struct Output<'a> {
            custom_id: String,
            #[serde(borrow)]
            #[allow(dead_code, reason = "read in some tests only")]
            response: &'a serde_json::value::RawValue,
        }
        let parsed: Output<'_> = serde_json::from_str(&line).expect("output lines are JSON");
        assert_eq!(parsed.custom_id, custom_id);
    }
});
