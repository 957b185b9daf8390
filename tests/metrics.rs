//! `/metrics`: valid Prometheus text, and counters that move as expected.
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

use common::fake_upstream::{chunk, done};
use common::gateway::{chat, deployment};
use common::{Behavior, FakeUpstream, TestGateway};

/// Every sample line is `name{labels} value` with a numeric value, and every
/// metric has HELP and TYPE lines.
fn assert_valid_exposition(text: &str) {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| typed.contains(*base))
            .unwrap_or(name);
        assert!(typed.contains(family), "no TYPE for {name}");
    }
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_parse_and_move_as_requests_flow() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n[server]\nmax_concurrency = 8\n{}",
        deployment("oa", &upstream, "max_concurrency = 4")
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(
            gateway
                .post("/v1/chat/completions", None, &chat("gpt-4o"))
                .await
                .status(),
            200
        );
    }
    upstream.push(Behavior::Stream {
        events: vec![chunk("hi"), done()],
        interval: std::time::Duration::ZERO,
        gate: None,
    });
    let mut streamed = chat("gpt-4o");
    streamed["stream"] = true.into();
    gateway
        .post("/v1/chat/completions", None, &streamed)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        gateway
            .post("/v1/chat/completions", None, &chat("nope"))
            .await
            .status(),
        404
    );
    assert_eq!(
        gateway
            .client
            .get(gateway.url("/wp-login.php"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let text = gateway.metrics().await;
    assert_valid_exposition(&text);
    let ok = r#"sluice_requests_total{deployment="oa",model="gpt-4o",route="/v1/chat/completions",status="2xx"}"#;
    assert_eq!(value(&text, ok), 4.0);
    let missing = r#"sluice_requests_total{deployment="-",model="-",route="/v1/chat/completions",status="4xx"}"#;
    assert_eq!(value(&text, missing), 1.0);
    assert_eq!(
        value(
            &text,
            r#"sluice_requests_total{deployment="-",model="-",route="other",status="4xx"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_request_duration_seconds_count{route="/v1/chat/completions"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_gateway_overhead_seconds_count{route="/v1/chat/completions"}"#
        ),
        4.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_upstream_duration_seconds_count{deployment="oa"}"#
        ),
        4.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_time_to_first_token_seconds_count{model="gpt-4o"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_queue_wait_seconds_count{class="standard"}"#
        ),
        8.0,
        "gateway and deployment slots"
    );
    assert_eq!(
        value(
            &text,
            r#"sluice_tokens_total{deployment="oa",model="gpt-4o",type="prompt"}"#
        ),
        15.0
    );
    // 3 non-streamed calls (the stream reported no usage), each 2 fresh + 3
    // cached prompt tokens and 2 completion tokens at gpt-4o prices.
    let cost = value(&text, r#"sluice_cost_usd_total{model="gpt-4o"}"#);
    assert!((cost - 3.0 * 28.75e-6).abs() < 1e-12, "{cost}");
    assert_eq!(
        value(&text, r#"sluice_circuit_state{deployment="oa"}"#),
        0.0
    );
    assert_eq!(value(&text, r#"sluice_queue_depth{queue="gateway"}"#), 0.0);
    assert_eq!(
        value(&text, "sluice_in_flight_requests"),
        1.0,
        "the scrape itself"
    );
}

#[test]
fn the_shipped_dashboard_uses_only_metrics_sluice_defines() {
    let defined = sluice::infra::metrics::Metrics::new()
        .unwrap()
        .names()
        .to_vec();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docker/grafana-dashboard.json"
    ))
    .unwrap();
    let mut used: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("sluice_"))
        .map(|word| word.trim_end_matches("_bucket"))
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() > 10, "{used:?}");
    for name in used {
        assert!(
            defined.iter().any(|d| d == name),
            "the dashboard uses {name}, which Sluice does not define"
        );
    }
}

#[tokio::test]
async fn per_key_series_only_when_asked_for() {
    let upstream = FakeUpstream::start("oa").await;
    let keys = "[[keys]]\nname = \"team\"\nkey = \"sk-team-0000000\"\n";
    let with = TestGateway::start(&format!(
        "[metrics]\nper_key = true\n{}{keys}",
        deployment("oa", &upstream, "")
    ))
    .await;
    with.post(
        "/v1/chat/completions",
        Some("sk-team-0000000"),
        &chat("gpt-4o"),
    )
    .await;
    assert_eq!(
        value(
            &with.metrics().await,
            r#"sluice_key_requests_total{key="team",status="2xx"}"#
        ),
        1.0
    );

    let without = TestGateway::start(&format!("{}{keys}", deployment("oa", &upstream, ""))).await;
    without
        .post(
            "/v1/chat/completions",
            Some("sk-team-0000000"),
            &chat("gpt-4o"),
        )
        .await;
    assert!(
        !without
            .metrics()
            .await
            .contains("sluice_key_requests_total{"),
        "no key names by default"
    );
}

#[tokio::test]
async fn a_client_that_leaves_is_no_longer_in_flight() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(std::time::Duration::from_secs(5)));
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}",
        deployment("oa", &upstream, "")
    ))
    .await;
    let leaving = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .json(&chat("gpt-4o"))
        .timeout(std::time::Duration::from_millis(200))
        .send()
        .await;
    assert!(leaving.is_err(), "the client gave up");
    // Only the scrape itself is in flight once the gateway sees the hang-up.
    let mut in_flight = f64::NAN;
    for _ in 0..50 {
        in_flight = value(&gateway.metrics().await, "sluice_in_flight_requests");
        if in_flight == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight, 1.0);
}

#[tokio::test]
async fn the_admin_overview_sums_what_metrics_count() {
    let upstream = FakeUpstream::start("oa").await;
    let token = "admin-token-0123456789";
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n[admin]\ntoken = \"{token}\"\n{}",
        deployment("oa", &upstream, "")
    ))
    .await;
    for _ in 0..3 {
        gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await;
    }
    upstream.push(Behavior::server_error());
    upstream.push(Behavior::server_error());
    upstream.push(Behavior::server_error());
    gateway
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await;
    gateway
        .post("/v1/chat/completions", None, &chat("nope"))
        .await;
    gateway.get_json("/healthz", None).await;
    let refused = gateway.get_as("wrong-token", "/admin/overview").await;
    assert_eq!(refused.status(), 401);
    let overview = gateway.get_json("/admin/overview", Some(token)).await;
    assert_eq!(overview["object"], "overview");
    let requests = &overview["requests"];
    assert_eq!(requests["2xx"], 3, "{overview}");
    assert_eq!(requests["5xx"], 1, "{overview}");
    assert_eq!(requests["4xx"], 1, "{overview}");
    assert_eq!(
        requests["total"], 5,
        "health checks and admin calls are not counted"
    );
    let latency = &overview["latency_seconds"];
    assert_eq!(latency["count"], 5);
    let buckets = latency["buckets"].as_array().unwrap();
    let last = buckets.last().unwrap();
    assert!(
        last[1].as_u64().unwrap() <= 5 && buckets.len() > 5,
        "{latency}"
    );
    assert_eq!(
        overview["tokens"]["prompt"], 15,
        "3 answers of 5 prompt tokens"
    );
    assert_eq!(overview["tokens"]["completion"], 6);
    assert!(overview["overhead_seconds"]["count"].as_u64().unwrap() >= 3);
    assert_eq!(overview["in_flight"], 1, "this call");
}
