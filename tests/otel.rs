//! OpenTelemetry traces against a real OTLP receiver that decodes them with
//! the official protobuf definitions: the span tree of a call, a stream, a
//! retried call, a cache hit, a refusal; `traceparent` continuity at the
//! fake upstream; the `OTEL_*` variables; and an exporter that is down,
//! slow or refusing, which clients must not notice.
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

use std::collections::HashMap;
use std::time::Duration;

use common::fake_upstream::{chunk, done};
use common::gateway::{chat, deployment};
use common::otlp::{Receiver, children, named};
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A gateway on `upstream` exporting to `endpoint` every 20 ms.
async fn traced(upstream: &FakeUpstream, otel: &str, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[auth]\nrequired = false\n[otel]\nschedule_delay = \"20ms\"\n{otel}\n{extra}\n{}",
        deployment("oa", upstream, "")
    ))
    .await
}

/// A gateway on `upstream` with `vars` as its environment.
async fn with_env(upstream: &FakeUpstream, vars: &[(&str, String)]) -> TestGateway {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let config = format!(
        "[auth]\nrequired = false\n{}",
        deployment("oa", upstream, "")
    );
    TestGateway::start_with_env(&config, &env).await
}

async fn post_traced(gateway: &TestGateway, body: &Value, traceparent: &str) -> reqwest::Response {
    gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .header("traceparent", traceparent)
        .header("tracestate", "vendor=abc")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// `traceparent`'s trace id and parent span id.
fn ids_of(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_call_continues_the_callers_trace_down_to_the_upstream() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!("endpoint = \"{}\"", receiver.endpoint());
    let gateway = traced(&upstream, &otel, "").await;
    let mut body = chat("gpt-4o");
    body["temperature"] = json!(0.5);
    body["max_tokens"] = json!(64);
    let response = post_traced(&gateway, &body, CALLER).await;
    assert_eq!(response.status(), 200);

    let spans = receiver.wait_for(2).await;
    let server = named(&spans, "POST /v1/chat/completions");
    let client = named(&spans, "chat gpt-4o");
    let (caller_trace, caller_span) = ids_of(CALLER);
    assert_eq!(server["kind"], "SPAN_KIND_SERVER");
    assert_eq!(server["trace_id"], caller_trace.as_str());
    assert_eq!(server["parent_span_id"], caller_span.as_str());
    assert_eq!(server["trace_state"], "vendor=abc");
    assert_eq!(
        server["flags"].as_u64().unwrap() & 0x301,
        0x301,
        "remote parent, sampled"
    );
    assert_eq!(attr(server, "http.response.status_code"), 200);
    assert_eq!(attr(server, "http.route"), "/v1/chat/completions");
    assert_eq!(attr(server, "sluice.deployment"), "oa");
    assert_eq!(attr(server, "sluice.attempts"), 1);
    assert_eq!(server["resource"]["service.name"], "sluice");

    assert_eq!(client["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(client["trace_id"], caller_trace.as_str());
    assert_eq!(client["parent_span_id"], server["span_id"]);
    for (key, expected) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai")),
        ("gen_ai.request.model", json!("gpt-4o")),
        ("gen_ai.response.model", json!("gpt-4o")),
        ("gen_ai.response.id", json!("chatcmpl-fake")),
        ("gen_ai.response.finish_reasons", json!(["stop"])),
        ("gen_ai.usage.input_tokens", json!(5)),
        ("gen_ai.usage.output_tokens", json!(2)),
        ("gen_ai.usage.cache_read.input_tokens", json!(3)),
        ("gen_ai.request.temperature", json!(0.5)),
        ("gen_ai.request.max_tokens", json!(64)),
        ("server.address", json!("127.0.0.1")),
        ("http.response.status_code", json!(200)),
    ] {
        assert_eq!(attr(client, key), &expected, "{key} in {client:#}");
    }
    assert!(
        attr(client, "gen_ai.input.messages").is_null(),
        "content is not captured by default"
    );
    let start = server["start"].as_u64().unwrap();
    assert!(start <= client["start"].as_u64().unwrap());
    assert!(client["end"].as_u64().unwrap() <= server["end"].as_u64().unwrap());

    let sent = upstream.last();
    let traceparent = sent.headers["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!(
            "00-{caller_trace}-{}-01",
            client["span_id"].as_str().unwrap()
        )
    );
    assert_eq!(sent.headers["tracestate"], "vendor=abc");
}

#[tokio::test]
async fn a_stream_has_its_first_token_usage_and_outcome() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!("endpoint = \"{}\"", receiver.endpoint());
    let gateway = traced(&upstream, &otel, "").await;
    let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
    upstream.push(Behavior::Stream {
        events: vec![chunk("hi"), format!("data: {usage}\n\n"), done()],
        interval: Duration::from_millis(5),
        gate: None,
    });
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let response = post_traced(&gateway, &body, CALLER).await;
    assert!(response.text().await.unwrap().contains("[DONE]"));

    let spans = receiver.wait_for(2).await;
    let server = named(&spans, "POST /v1/chat/completions");
    let client = named(&spans, "chat gpt-4o");
    assert_eq!(attr(server, "sluice.stream.outcome"), "completed");
    assert_eq!(attr(client, "sluice.stream.outcome"), "completed");
    assert_eq!(attr(client, "gen_ai.usage.input_tokens"), 9);
    assert_eq!(attr(client, "gen_ai.usage.output_tokens"), 4);
    assert_eq!(
        attr(client, "gen_ai.response.finish_reasons"),
        &json!(["length"])
    );
    let first = client["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "sluice.first_token")
        .expect("a first-token event");
    let at = first["time"].as_u64().unwrap();
    assert!(client["start"].as_u64().unwrap() <= at && at <= client["end"].as_u64().unwrap());
    assert!(
        attr(client, "sluice.time_to_first_token_s")
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn a_retried_call_has_one_span_per_attempt() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!("endpoint = \"{}\"", receiver.endpoint());
    let gateway = traced(&upstream, &otel, "[retry]\nbase_delay = \"1ms\"").await;
    upstream.push(Behavior::server_error());
    let response = post_traced(&gateway, &chat("gpt-4o"), CALLER).await;
    assert_eq!(response.status(), 200);

    let spans = receiver.wait_for(3).await;
    let server = named(&spans, "POST /v1/chat/completions");
    let attempts = children(&spans, server);
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    let first = attempts
        .iter()
        .find(|s| attr(s, "sluice.attempt") == 1)
        .unwrap();
    let second = attempts
        .iter()
        .find(|s| attr(s, "sluice.attempt") == 2)
        .unwrap();
    assert_eq!(first["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(attr(first, "error.type"), "500");
    assert_eq!(attr(first, "http.response.status_code"), 500);
    assert!(attr(second, "error.type").is_null());
    assert_eq!(attr(server, "sluice.attempts"), 2);
    let sent: Vec<String> = upstream
        .recorded()
        .iter()
        .map(|r| r.headers["traceparent"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 2);
    for (header, span) in sent.iter().zip([first, second]) {
        assert_eq!(ids_of(header).1, span["span_id"].as_str().unwrap());
    }
}

#[tokio::test]
async fn without_a_traceparent_a_new_trace_starts_and_a_bad_one_is_ignored() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!("endpoint = \"{}\"", receiver.endpoint());
    let gateway = traced(&upstream, &otel, "").await;
    let bad = "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01";
    assert_eq!(
        post_traced(&gateway, &chat("gpt-4o"), bad).await.status(),
        200
    );
    let spans = receiver.wait_for(2).await;
    let server = named(&spans, "POST /v1/chat/completions");
    assert_eq!(server["parent_span_id"], "");
    assert_ne!(server["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        server["trace_state"], "",
        "tracestate goes with a bad traceparent"
    );
    assert_eq!(server["flags"].as_u64().unwrap() & 0x200, 0, "not remote");
}

#[tokio::test]
async fn the_otel_variables_configure_the_export() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let gateway = with_env(
        &upstream,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("OTEL_SERVICE_NAME", "edge-gateway".to_owned()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,team=platform%20ops".to_owned(),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cret".to_owned()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "20".to_owned()),
        ],
    )
    .await;
    assert_eq!(
        gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await
            .status(),
        200
    );
    let spans = receiver.wait_for(2).await;
    let resource = &spans[0]["resource"];
    assert_eq!(resource["service.name"], "edge-gateway");
    assert_eq!(resource["deployment.environment"], "test");
    assert_eq!(resource["team"], "platform ops");
    let requests = receiver.requests().await;
    assert_eq!(requests[0]["path"], "/v1/traces");
    assert_eq!(requests[0]["headers"]["x-api-key"], "s3cret");
    assert_eq!(requests[0]["headers"]["content-encoding"], "gzip");
}

#[tokio::test]
async fn a_sampler_that_drops_still_passes_the_context_on() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let gateway = with_env(
        &upstream,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", "0".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "20".to_owned()),
        ],
    )
    .await;
    // No parent: the ratio (0) drops it, and the upstream hears so.
    gateway
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await;
    let unsampled = upstream.last().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    // A sampled parent: followed.
    post_traced(&gateway, &chat("gpt-4o"), CALLER).await;
    let spans = receiver.wait_for(2).await;
    assert!(
        spans
            .iter()
            .all(|s| s["trace_id"] == ids_of(CALLER).0.as_str())
    );
    assert_eq!(spans.len(), 2);
}

#[tokio::test]
async fn with_tracing_off_the_callers_context_is_passed_on() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = with_env(
        &upstream,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:9".to_owned(),
            ),
            ("OTEL_SDK_DISABLED", "true".to_owned()),
        ],
    )
    .await;
    post_traced(&gateway, &chat("gpt-4o"), CALLER).await;
    let sent = upstream.last();
    assert_eq!(sent.headers["traceparent"], CALLER);
    assert_eq!(sent.headers["tracestate"], "vendor=abc");
    gateway
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await;
    assert!(!upstream.last().headers.contains_key("traceparent"));
}

/// Calls through a gateway whose collector misbehaves: every one answers
/// 200 within `within`, and the spans are counted as dropped.
async fn clients_do_not_notice(gateway: &TestGateway, within: Duration) {
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let response = gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await;
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < within, "{:?}", started.elapsed());
    }
}

fn dropped(metrics: &str, reason: &str) -> f64 {
    let series = format!("sluice_trace_spans_dropped_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn wait_dropped(gateway: &TestGateway, reason: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = dropped(&gateway.metrics().await, reason);
        if seen >= at_least {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen} {reason}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_refusing_collector_changes_nothing_for_clients() {
    let receiver = Receiver::start(false);
    receiver.set_mode("refuse", 0.0).await;
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!(
        "endpoint = \"{}\"\ntimeout = \"300ms\"",
        receiver.endpoint()
    );
    let gateway = traced(&upstream, &otel, "").await;
    clients_do_not_notice(&gateway, Duration::from_secs(1)).await;
    wait_dropped(&gateway, "export_failed", 1.0).await;
    assert!(receiver.refused().await >= 1, "the collector was asked");
}

#[tokio::test]
async fn a_slow_or_absent_collector_changes_nothing_for_clients() {
    let receiver = Receiver::start(false);
    receiver.set_mode("slow", 5.0).await;
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!(
        "endpoint = \"{}\"\ntimeout = \"200ms\"\nmax_queue_size = 4\nmax_export_batch_size = 2",
        receiver.endpoint()
    );
    let gateway = traced(&upstream, &otel, "").await;
    clients_do_not_notice(&gateway, Duration::from_secs(1)).await;
    wait_dropped(&gateway, "queue_full", 1.0).await;
    wait_dropped(&gateway, "export_failed", 1.0).await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let otel = format!("endpoint = \"http://127.0.0.1:{port}\"\ntimeout = \"200ms\"");
    let gateway = traced(&upstream, &otel, "").await;
    clients_do_not_notice(&gateway, Duration::from_secs(1)).await;
    wait_dropped(&gateway, "export_failed", 1.0).await;
}

#[tokio::test]
async fn spans_go_over_grpc_too() {
    let receiver = Receiver::start(true);
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!(
        "endpoint = \"{}\"\nprotocol = \"grpc\"\ncompression = \"gzip\"\nheaders = {{ authorization = \"Bearer t0k3n-secret\" }}",
        receiver.grpc_endpoint()
    );
    let gateway = traced(
        &upstream,
        &otel,
        "[admin]\ntoken = \"admin-token-0123456789\"",
    )
    .await;
    post_traced(&gateway, &chat("gpt-4o"), CALLER).await;
    let spans = receiver.wait_for(2).await;
    named(&spans, "chat gpt-4o");
    let requests = receiver.requests().await;
    assert_eq!(requests[0]["transport"], "grpc");
    assert_eq!(
        requests[0]["headers"]["authorization"],
        "Bearer t0k3n-secret"
    );
    let config = gateway
        .get_json("/admin/config", Some("admin-token-0123456789"))
        .await;
    assert_eq!(config["config"]["otel"]["protocol"], "grpc", "{config}");
    assert!(!config.to_string().contains("t0k3n-secret"), "{config}");
}

#[tokio::test]
async fn a_collector_that_rejects_an_export_is_not_asked_again() {
    let receiver = Receiver::start(false);
    receiver.set_mode("reject", 0.0).await;
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!("endpoint = \"{}\"", receiver.endpoint());
    let gateway = traced(&upstream, &otel, "").await;
    post_traced(&gateway, &chat("gpt-4o"), CALLER).await;
    wait_dropped(&gateway, "export_failed", 2.0).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let exports = receiver.refused().await;
    assert!(
        (1..=2).contains(&exports),
        "a 400 is final: {exports} tries"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_ends_both_spans() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!("endpoint = \"{}\"", receiver.endpoint());
    let gateway = traced(&upstream, &otel, "").await;
    let _gate = upstream.push_gated_stream(vec![chunk("one"), chunk("two"), done()]);
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let mut response = post_traced(&gateway, &body, CALLER).await;
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    let spans = receiver.wait_for(2).await;
    let server = named(&spans, "POST /v1/chat/completions");
    let client = named(&spans, "chat gpt-4o");
    assert_eq!(attr(server, "sluice.stream.outcome"), "client_closed");
    assert_eq!(attr(client, "sluice.stream.outcome"), "client_closed");
    assert_eq!(server["status"]["code"], "STATUS_CODE_UNSET");
    assert!(
        event(client, "sluice.first_token")["time"]
            .as_u64()
            .unwrap()
            > 0
    );
}

fn event<'a>(span: &'a Value, name: &str) -> &'a Value {
    span["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no event {name} in {span:#}"))
}

#[tokio::test]
async fn a_cache_hit_a_refusal_and_the_ledger_carry_the_trace() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let dir = std::env::temp_dir().join(format!("sluice-otel-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[otel]\nendpoint = \"{}\"\nschedule_delay = \"20ms\"\n[cache]\nenabled = true\n[usage]\nstore = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"20ms\"\n{}[[keys]]\nname = \"k\"\nkey = \"sk-k-00000000\"\nrpm = 1\n",
        receiver.endpoint(),
        dir.display(),
        deployment("oa", &upstream, "")
    );
    let gateway = TestGateway::start(&config).await;
    // Repeatable output: cached.
    let mut body = chat("gpt-4o");
    body["temperature"] = json!(0);
    let send = |traceparent: &'static str, body: &Value| {
        gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth("sk-k-00000000")
            .header("traceparent", traceparent)
            .json(body)
            .send()
    };
    let mut other = body.clone();
    other["messages"][0]["content"] = json!("Say goodbye");
    let first = "00-11111111111111111111111111111111-2222222222222222-01";
    let second = "00-33333333333333333333333333333333-4444444444444444-01";
    let third = "00-55555555555555555555555555555555-6666666666666666-01";
    assert_eq!(send(first, &body).await.unwrap().status(), 200);
    let hit = send(second, &body).await.unwrap();
    assert_eq!(hit.headers()["x-sluice-cache"], "hit");
    assert_eq!(send(third, &other).await.unwrap().status(), 429);

    let spans = receiver.wait_for(4).await;
    let of_trace = |trace: &str| -> Vec<Value> {
        spans
            .iter()
            .filter(|s| s["trace_id"] == ids_of(trace).0.as_str())
            .cloned()
            .collect()
    };
    let missed = of_trace(first);
    assert_eq!(missed.len(), 2, "server and attempt");
    let server = named(&missed, "POST /v1/chat/completions");
    assert_eq!(
        event(server, "sluice.cache")["attributes"]["sluice.cache.result"],
        "miss"
    );
    assert_eq!(
        event(server, "sluice.rate_limit")["attributes"]["sluice.rate_limit.decision"],
        "admitted"
    );
    assert_eq!(attr(server, "sluice.key.name"), "k");
    let hit = of_trace(second);
    assert_eq!(hit.len(), 1, "a hit makes no attempt: {hit:#?}");
    assert_eq!(attr(&hit[0], "sluice.cache"), "hit");
    assert_eq!(
        event(&hit[0], "sluice.cache")["attributes"]["sluice.cache.result"],
        "hit"
    );
    let refused = of_trace(third);
    assert_eq!(refused.len(), 1);
    assert_eq!(attr(&refused[0], "http.response.status_code"), 429);
    assert_eq!(
        event(&refused[0], "sluice.rate_limit")["attributes"]["sluice.rate_limit.decision"],
        "refused"
    );
    assert_eq!(
        refused[0]["status"]["code"], "STATUS_CODE_UNSET",
        "4xx is the caller's"
    );

    let db = rusqlite::Connection::open(dir.join("usage.db")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let traces: Vec<String> = loop {
        let mut statement = db
            .prepare("SELECT trace_id FROM sluice_usage ORDER BY at_ms")
            .unwrap();
        let rows: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if rows.len() >= 3 || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected: Vec<String> = [first, second, third].iter().map(|t| ids_of(t).0).collect();
    assert_eq!(traces, expected);
    drop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn content_is_captured_only_when_asked_and_cut_to_its_cap() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let otel = format!(
        "endpoint = \"{}\"\ncapture_content = true\ncontent_max_bytes = 200",
        receiver.endpoint()
    );
    let gateway = traced(&upstream, &otel, "").await;
    let mut long = chat("gpt-4o");
    long["messages"][0]["content"] = json!("é".repeat(300));
    post_traced(&gateway, &long, CALLER).await;
    let spans = receiver.wait_for(2).await;
    let client = named(&spans, "chat gpt-4o");
    let input = attr(client, "gen_ai.input.messages").as_str().unwrap();
    assert!(input.starts_with("[{\""), "{input}");
    assert!(input.ends_with("…[truncated]"), "{input}");
    let output = attr(client, "gen_ai.output.messages").as_str().unwrap();
    assert!(
        output.starts_with("[{\"") && output.contains("from oa"),
        "{output}"
    );
}

/// The spans named `name`.
fn all_named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

#[tokio::test]
async fn batch_lines_and_async_jobs_link_to_the_calls_that_queued_them() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let dir = common::process::TempDir::new("sluice-otel-jobs");
    let key = "sk-jobs-0000001";
    let config = format!(
        "[otel]\nendpoint = \"{}\"\nschedule_delay = \"20ms\"\n\
         [batch]\nstore = \"sqlite:{dir}/jobs.sqlite\"\nfiles_dir = \"{dir}/files\"\npoll_interval = \"50ms\"\n\
         [[keys]]\nname = \"app\"\nkey = \"{key}\"\n{}",
        receiver.endpoint(),
        deployment("oa", &upstream, ""),
        dir = dir.display(),
    );
    let gateway = TestGateway::start(&config).await;

    let line = |id: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": chat("gpt-4o")})
            .to_string()
    };
    let file =
        common::batch_api::upload(&gateway, key, &format!("{}\n{}\n", line("a"), line("b"))).await;
    let created = gateway
        .client
        .post(gateway.url("/v1/batches"))
        .bearer_auth(key)
        .header("traceparent", CALLER)
        .json(&json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let batch_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let submitter = "00-77777777777777777777777777777777-8888888888888888-01";
    let queued = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("prefer", "respond-async")
        .header("traceparent", submitter)
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);

    // Upload, batch create, async submit; two lines and one job, each
    // with its attempt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.spans().await;
        let lines = all_named(&spans, "batch_line /v1/chat/completions").len();
        let jobs = all_named(&spans, "async_job /v1/chat/completions").len();
        let attempts = all_named(&spans, "chat gpt-4o").len();
        if (lines, jobs, attempts) == (2, 1, 3) {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "{spans:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let create = named(&spans, "POST /v1/batches");
    assert_eq!(create["trace_id"], ids_of(CALLER).0.as_str());
    for line in all_named(&spans, "batch_line /v1/chat/completions") {
        assert_eq!(line["kind"], "SPAN_KIND_INTERNAL");
        assert_eq!(attr(line, "sluice.batch.id"), batch_id.as_str());
        assert_eq!(line["parent_span_id"], "", "a trace of its own");
        assert_ne!(line["trace_id"], create["trace_id"]);
        let link = &line["links"][0];
        assert_eq!(link["trace_id"], create["trace_id"]);
        assert_eq!(link["span_id"], create["span_id"]);
        assert_eq!(children(&spans, line).len(), 1, "its attempt");
    }
    let submit = spans
        .iter()
        .find(|s| s["trace_id"] == ids_of(submitter).0.as_str())
        .unwrap();
    let job = named(&spans, "async_job /v1/chat/completions");
    assert_eq!(job["links"][0]["span_id"], submit["span_id"]);
    for sent in upstream.recorded() {
        let traceparent = sent.headers["traceparent"].to_str().unwrap();
        let trace = ids_of(traceparent).0;
        assert!(
            trace != ids_of(CALLER).0 && trace != ids_of(submitter).0,
            "queued work runs in traces of its own: {traceparent}"
        );
    }
}

#[tokio::test]
async fn a_semantic_cache_embedding_is_a_child_of_the_call_that_needed_it() {
    let receiver = Receiver::start(false);
    let upstream = FakeUpstream::start("oa").await;
    let config = format!(
        "[auth]\nrequired = false\n[otel]\nendpoint = \"{}\"\nschedule_delay = \"20ms\"\n\
         [cache]\nenabled = true\n[cache.semantic]\nenabled = true\nthreshold = 0.9\n\
         embedding_model = \"text-embedding-3-small\"\n{}\
         [[deployments]]\nname = \"embedder\"\nprovider = \"mock\"\nmodels = [\"text-embedding-3-small\"]\n",
        receiver.endpoint(),
        deployment("oa", &upstream, "")
    );
    let gateway = TestGateway::start(&config).await;
    let mut body = chat("gpt-4o");
    body["temperature"] = json!(0);
    assert_eq!(post_traced(&gateway, &body, CALLER).await.status(), 200);
    // The call, its attempt, the embedding and the embedding's attempt.
    let spans = receiver.wait_for(4).await;
    let server = named(&spans, "POST /v1/chat/completions");
    let embedding = named(&spans, "semantic_cache_embedding /v1/embeddings");
    assert_eq!(embedding["parent_span_id"], server["span_id"]);
    assert_eq!(embedding["trace_id"], server["trace_id"]);
    let attempt = named(&spans, "embeddings text-embedding-3-small");
    assert_eq!(attempt["parent_span_id"], embedding["span_id"]);
    assert_eq!(attr(attempt, "gen_ai.provider.name"), "sluice.mock");
}

#[tokio::test]
async fn a_collector_that_is_down_holds_shutdown_up_for_seconds_at_most() {
    let upstream = FakeUpstream::start("oa").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    // Exports retry for up to a minute: shutdown must not wait for that.
    let otel = format!("endpoint = \"http://127.0.0.1:{port}\"\ntimeout = \"60s\"");
    let mut gateway = traced(&upstream, &otel, "[server]\ndrain_delay = \"0s\"").await;
    clients_do_not_notice(&gateway, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its keep-alive connections closed, so only the exporter can hold on.
    gateway.client = reqwest::Client::new();
    let started = std::time::Instant::now();
    gateway.shutdown();
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .expect("the gateway stops")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}
