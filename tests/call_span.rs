//! One `call` span per request: the lines a call logs, a retry's warning and
//! a stream's access line (written when its relay drops) included, carry the
//! request id of their call. Logs are captured as JSON lines, the format
//! `[log] format = "json"` writes.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::gateway::{chat, deployment};
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

/// Every log line of this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn install() -> Self {
        let captured = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    }

    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The lines whose message is `message`, or the access lines.
    fn find(&self, message: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| {
                line["message"].as_str() == Some(message)
                    || (message == "access" && line["target"] == "sluice::access")
            })
            .collect()
    }
}

#[tokio::test]
async fn a_calls_lines_carry_its_request_id() {
    let captured = Captured::install();
    let failing = FakeUpstream::start("failing").await;
    failing.set_default(Behavior::server_error());
    let spare = FakeUpstream::start("spare").await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}{}",
        deployment("failing", &failing, "priority = 0"),
        deployment("spare", &spare, "priority = 1"),
    ))
    .await;

    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .header("x-request-id", "req-retried-1")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    let retries = captured.find("upstream attempt failed; retrying if the retry policy allows");
    let retry = retries
        .iter()
        .find(|line| line["span"]["request_id"] == "req-retried-1")
        .unwrap_or_else(|| panic!("no retry line in the call's span: {retries:?}"));
    assert_eq!(retry["level"], "WARN");
    assert_eq!(retry["deployment"], "failing");
    assert_eq!(retry["span"]["name"], "call");
    assert_eq!(retry["span"]["method"], "POST");
    assert_eq!(retry["span"]["path"], "/v1/chat/completions");
    assert_eq!(retry["span"]["model"], "gpt-4o");

    // A streamed call: its access line is written when the relay drops,
    // after the handler returned, and still belongs to the call.
    spare.push(Behavior::Stream {
        events: vec![
            common::fake_upstream::chunk("hi"),
            common::fake_upstream::done(),
        ],
        interval: Duration::ZERO,
        gate: None,
    });
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .header("x-request-id", "req-streamed-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("[DONE]"));
    let mut access = None;
    for _ in 0..100 {
        access = captured
            .find("access")
            .into_iter()
            .find(|line| line["request_id"] == "req-streamed-1");
        if access.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let access = access.expect("the stream's access line");
    assert_eq!(access["stream"], "completed");
    assert_eq!(access["span"]["request_id"], "req-streamed-1");
    assert_eq!(
        access["span"]["deployment"], "spare",
        "recorded on the span once known"
    );
    let retried = captured
        .find("upstream attempt failed; retrying if the retry policy allows")
        .into_iter()
        .any(|line| line["span"]["request_id"] == "req-streamed-1");
    assert!(retried, "the stream's own retry is in its span");
}

/// The text format writes a span's recorded fields as they come: each of
/// the call's fields appears once in its prefix, however many layers learn
/// about the call.
#[tokio::test(flavor = "current_thread")]
async fn the_text_format_writes_each_span_field_once() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    // This thread only: the test's tasks run on it (a current-thread runtime).
    let _default = tracing::subscriber::set_default(subscriber);
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}",
        deployment("oa", &upstream, "")
    ))
    .await;
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .header("x-request-id", "req-text-1")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut line = None;
    for _ in 0..100 {
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        line = text
            .lines()
            .find(|line| line.contains("sluice::access") && line.contains("req-text-1"))
            .map(str::to_owned);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let line = line.expect("the access line");
    let prefix = &line[..line.find("}:").expect("the span's prefix")];
    for field in ["model=", "deployment=", "key="] {
        assert_eq!(prefix.matches(field).count(), 1, "{field} in {line}");
    }
    assert!(
        !prefix.contains("served_model="),
        "nothing fell back: {line}"
    );
}
