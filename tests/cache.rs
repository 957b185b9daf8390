//! The exact response cache: hits, scopes, TTL, Cache-Control, eligibility,
//! streaming record and replay across shapes, coalescing, Redis sharing, and
//! the semantic cache in memory and in pgvector.
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

use std::time::Duration;

use common::fake_upstream::{chunk, done};
use common::gateway::deployment;
use common::postgres::{self, TestDatabase};
use common::redis::RedisServer;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

fn config(upstream: &FakeUpstream, cache: &str) -> String {
    format!(
        "[cache]\nenabled = true\n{cache}\n{}[[keys]]\nname = \"a\"\nkey = \"sk-a-00000000\"\norg = \"team\"\n[[keys]]\nname = \"b\"\nkey = \"sk-b-00000000\"\norg = \"team\"\n[[keys]]\nname = \"c\"\nkey = \"sk-c-00000000\"\n",
        deployment("oa", upstream, "")
    )
}

fn body(temperature: f64) -> Value {
    json!({"model": "gpt-4o", "temperature": temperature, "messages": [{"role": "user", "content": "What is Sluice?"}]})
}

async fn send(
    gateway: &TestGateway,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn status_of(response: &reqwest::Response) -> String {
    response.headers()["x-sluice-cache"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_same_request_twice_is_one_upstream_call() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    let first = send(&gateway, "sk-a-00000000", &body(0.0), &[]).await;
    assert_eq!(status_of(&first), "miss");
    let first_body = first.text().await.unwrap();
    // Field order and fields that do not change output do not matter.
    let reordered = json!({"messages": [{"content": "What is Sluice?", "role": "user"}], "user": "u-1", "temperature": 0.0, "model": "gpt-4o"});
    let second = send(&gateway, "sk-a-00000000", &reordered, &[]).await;
    assert_eq!(status_of(&second), "hit");
    assert!(second.headers().contains_key("age"));
    assert_eq!(second.text().await.unwrap(), first_body);
    assert_eq!(upstream.calls(), 1);
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_cache_requests_total{result="hit"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_cache_tokens_saved_total 7"),
        "{metrics}"
    );
    // 2 fresh + 3 cached prompt tokens and 2 completion tokens at gpt-4o prices.
    assert!(
        metrics.contains("sluice_cache_cost_saved_usd_total 0.00002875"),
        "{metrics}"
    );
}

#[tokio::test]
async fn scopes_never_share_across_tenants() {
    let upstream = FakeUpstream::start("oa").await;
    let by_key = TestGateway::start(&config(&upstream, "scope = \"key\"")).await;
    send(&by_key, "sk-a-00000000", &body(0.0), &[]).await;
    assert_eq!(
        status_of(&send(&by_key, "sk-b-00000000", &body(0.0), &[]).await),
        "miss"
    );

    let by_org = TestGateway::start(&config(&upstream, "scope = \"org\"")).await;
    send(&by_org, "sk-a-00000000", &body(0.0), &[]).await;
    assert_eq!(
        status_of(&send(&by_org, "sk-b-00000000", &body(0.0), &[]).await),
        "hit",
        "same org"
    );
    assert_eq!(
        status_of(&send(&by_org, "sk-c-00000000", &body(0.0), &[]).await),
        "miss",
        "other org"
    );

    let global = TestGateway::start(&config(&upstream, "scope = \"global\"")).await;
    send(&global, "sk-a-00000000", &body(0.0), &[]).await;
    assert_eq!(
        status_of(&send(&global, "sk-c-00000000", &body(0.0), &[]).await),
        "hit"
    );
}

#[tokio::test]
async fn ttl_expiry_and_the_per_request_override() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "ttl = \"1h\"")).await;
    send(
        &gateway,
        "sk-a-00000000",
        &body(0.0),
        &[("x-sluice-cache-ttl", "300ms")],
    )
    .await;
    assert_eq!(
        status_of(&send(&gateway, "sk-a-00000000", &body(0.0), &[]).await),
        "hit"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        status_of(&send(&gateway, "sk-a-00000000", &body(0.0), &[]).await),
        "miss",
        "expired"
    );
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn cache_control_no_cache_and_no_store() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    let key = "sk-a-00000000";
    assert_eq!(
        status_of(&send(&gateway, key, &body(0.0), &[("cache-control", "no-store")]).await),
        "bypass"
    );
    assert_eq!(
        status_of(&send(&gateway, key, &body(0.0), &[]).await),
        "miss",
        "no-store wrote nothing"
    );
    assert_eq!(
        status_of(&send(&gateway, key, &body(0.0), &[("cache-control", "no-cache")]).await),
        "miss",
        "no-cache skips lookup"
    );
    assert_eq!(
        status_of(&send(&gateway, key, &body(0.0), &[]).await),
        "hit"
    );
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test]
async fn only_repeatable_requests_unless_cache_all() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    for _ in 0..2 {
        assert_eq!(
            status_of(&send(&gateway, "sk-a-00000000", &body(0.7), &[]).await),
            "bypass"
        );
    }
    let seeded = json!({"model": "gpt-4o", "seed": 3, "messages": []});
    send(&gateway, "sk-a-00000000", &seeded, &[]).await;
    assert_eq!(
        status_of(&send(&gateway, "sk-a-00000000", &seeded, &[]).await),
        "hit",
        "a seed makes it repeatable"
    );

    let everything = TestGateway::start(&config(&upstream, "cache_all = true")).await;
    send(&everything, "sk-a-00000000", &body(0.7), &[]).await;
    assert_eq!(
        status_of(&send(&everything, "sk-a-00000000", &body(0.7), &[]).await),
        "hit"
    );
}

fn streamed(include_usage: bool) -> Value {
    let mut request = body(0.0);
    request["stream"] = true.into();
    if include_usage {
        request["stream_options"] = json!({"include_usage": true});
    }
    request
}

/// A chunk as upstreams send it once `include_usage` is on.
fn with_usage_null(chunk: String) -> String {
    chunk.replacen("}\n\n", ",\"usage\":null}\n\n", 1)
}

fn stream_behavior() -> Behavior {
    let usage = "data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
    Behavior::Stream {
        events: vec![
            with_usage_null(chunk("Hel")),
            with_usage_null(chunk("lo")),
            usage.into(),
            done(),
        ],
        interval: Duration::ZERO,
        gate: None,
    }
}

#[tokio::test]
async fn a_stream_is_recorded_and_replayed_as_a_stream_or_rebuilt_as_json() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(stream_behavior());
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    let miss = send(&gateway, "sk-a-00000000", &streamed(true), &[]).await;
    assert_eq!(status_of(&miss), "miss");
    let original = miss.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let hit = send(&gateway, "sk-a-00000000", &streamed(true), &[]).await;
    assert_eq!(status_of(&hit), "hit");
    assert_eq!(hit.headers()["content-type"], "text/event-stream");
    assert_eq!(
        hit.text().await.unwrap(),
        original,
        "same events, same order, ending with [DONE]"
    );

    let without_usage = send(&gateway, "sk-a-00000000", &streamed(false), &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !without_usage.contains("\"usage\"") && without_usage.ends_with("data: [DONE]\n\n"),
        "exactly the stream it would have had without include_usage: {without_usage}"
    );

    let json_hit = send(&gateway, "sk-a-00000000", &body(0.0), &[]).await;
    assert_eq!(status_of(&json_hit), "hit");
    let rebuilt: Value = json_hit.json().await.unwrap();
    assert_eq!(rebuilt["object"], "chat.completion");
    assert_eq!(rebuilt["choices"][0]["message"]["content"], "Hello");
    assert_eq!(rebuilt["usage"]["total_tokens"], 11);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn a_json_answer_is_replayed_as_a_stream() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    send(&gateway, "sk-a-00000000", &body(0.0), &[]).await;
    let hit = send(&gateway, "sk-a-00000000", &streamed(true), &[]).await;
    assert_eq!(status_of(&hit), "hit");
    let text = hit.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(
        events[0].contains("\"role\":\"assistant\"") && events[0].contains("from oa"),
        "{text}"
    );
    assert!(events[1].contains("\"finish_reason\":\"stop\""));
    assert!(events[2].contains("\"choices\":[]") && events[2].contains("\"total_tokens\":7"));
    assert_eq!(events[3], "data: [DONE]");
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn a_broken_stream_is_never_cached() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::BreakAfter(vec![chunk("par")]));
    let gateway = TestGateway::start(&format!(
        "[retry]\nmax_attempts = 1\n{}",
        config(&upstream, "")
    ))
    .await;
    let broken = send(&gateway, "sk-a-00000000", &streamed(false), &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(broken.contains("\"error\""));
    upstream.push(stream_behavior());
    let next = send(&gateway, "sk-a-00000000", &streamed(false), &[]).await;
    assert_eq!(status_of(&next), "miss");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn a_stream_larger_than_max_entry_bytes_is_delivered_whole_but_not_stored_or_shared() {
    use futures_util::StreamExt;
    let upstream = FakeUpstream::start("oa").await;
    let events: Vec<String> = std::iter::once(chunk("a"))
        .chain((0..64).map(|i| chunk(&format!("{i:0>200}"))))
        .chain(std::iter::once(done()))
        .collect();
    let whole = events.concat();
    let gate = upstream.push_gated_stream(events);
    let gateway = TestGateway::start(&config(&upstream, "max_entry_bytes = 4096")).await;
    let leader = send(&gateway, "sk-a-00000000", &streamed(true), &[]).await;
    assert_eq!(status_of(&leader), "miss");
    let mut leader_body = leader.bytes_stream();
    let mut received = leader_body.next().await.unwrap().unwrap().to_vec();
    // A joiner follows while the answer is still small enough to share.
    let joiner = send(&gateway, "sk-a-00000000", &streamed(true), &[]).await;
    assert_eq!(joiner.headers()["x-sluice-coalesced"], "true");
    gate.notify_one();
    while let Some(bytes) = leader_body.next().await {
        received.extend_from_slice(&bytes.unwrap());
    }
    assert_eq!(
        String::from_utf8(received).unwrap(),
        whole,
        "delivered whole"
    );
    let followed = joiner.text().await.unwrap();
    assert!(followed.starts_with(&chunk("a")), "{followed}");
    assert!(
        followed.ends_with("\n\n") && followed.contains("cache_entry_too_large"),
        "the joiner is told, not cut off silently: {followed}"
    );
    assert!(followed.len() < 4096 + 1024, "{}", followed.len());

    upstream.push(stream_behavior());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = send(&gateway, "sk-a-00000000", &streamed(true), &[]).await;
    assert_eq!(status_of(&next), "miss", "not stored");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn twenty_identical_calls_in_flight_reach_the_upstream_once() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(300)));
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    let calls = (0..20).map(|_| async {
        let response = send(&gateway, "sk-a-00000000", &body(0.0), &[]).await;
        response.text().await.unwrap()
    });
    let bodies = futures_util::future::join_all(calls).await;
    assert_eq!(upstream.calls(), 1);
    assert!(
        bodies
            .iter()
            .all(|b| b == &bodies[0] && b.contains("from oa"))
    );
}

#[tokio::test]
async fn twenty_identical_streams_in_flight_share_one_upstream_stream() {
    let upstream = FakeUpstream::start("oa").await;
    let gate = upstream.push_gated_stream(vec![chunk("a"), chunk("b"), done()]);
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    let leader = send(&gateway, "sk-a-00000000", &streamed(false), &[]).await;
    let mut leader_body = leader.bytes_stream();
    use futures_util::StreamExt;
    let first = leader_body.next().await.unwrap().unwrap();
    assert_eq!(first, chunk("a").as_bytes());
    // Nineteen joiners arrive mid-stream: they get "a" already sent, then the rest.
    let joiners = (0..19).map(|_| async {
        let response = send(&gateway, "sk-a-00000000", &streamed(false), &[]).await;
        assert_eq!(response.headers()["x-sluice-coalesced"], "true");
        response.text().await.unwrap()
    });
    let opener = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        gate.notify_one();
    };
    let (texts, ()) = tokio::join!(futures_util::future::join_all(joiners), opener);
    let mut rest = Vec::new();
    while let Some(bytes) = leader_body.next().await {
        rest.extend_from_slice(&bytes.unwrap());
    }
    let expected = chunk("a") + &chunk("b") + &done();
    assert_eq!(
        String::from_utf8(first.to_vec()).unwrap() + &String::from_utf8(rest).unwrap(),
        expected
    );
    assert!(texts.iter().all(|t| t == &expected), "{texts:?}");
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn two_gateways_share_hits_through_redis() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start("oa").await;
    let shared = format!(
        "[redis]\nurl = \"{}\"\n{}",
        redis.url(),
        config(&upstream, "store = \"redis\"\nscope = \"global\"")
    );
    let first = TestGateway::start(&shared).await;
    let second = TestGateway::start(&shared).await;
    // Wait until the first gateway can write (it connects in the background).
    for _ in 0..100 {
        send(&first, "sk-a-00000000", &body(0.0), &[]).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        if status_of(&send(&first, "sk-a-00000000", &body(0.0), &[]).await) == "hit" {
            break;
        }
    }
    let hit = send(&second, "sk-c-00000000", &body(0.0), &[]).await;
    assert_eq!(status_of(&hit), "hit", "the other replica sees the entry");
    assert!(hit.text().await.unwrap().contains("from oa"));
}

fn semantic_config(upstream: &FakeUpstream, embeddings: &str) -> String {
    semantic_config_with(upstream, embeddings, "", "")
}

/// With extra lines in `[cache]` and `[cache.semantic]`.
fn semantic_config_with(
    upstream: &FakeUpstream,
    embeddings: &str,
    cache: &str,
    semantic: &str,
) -> String {
    format!(
        r#"
        [auth]
        required = false
        [cache]
        enabled = true
        {cache}
        [cache.semantic]
        enabled = true
        threshold = 0.9
        embedding_model = "text-embedding-3-small"
        timeout = "500ms"
        {semantic}
        {}
        [[deployments]]
        name = "embedder"
        provider = "mock"
        models = ["text-embedding-3-small"]
        {embeddings}
        "#,
        deployment("oa", upstream, "")
    )
}

fn question(system: Option<&str>, text: &str) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": text}));
    json!({"model": "gpt-4o", "temperature": 0, "messages": messages})
}

async fn ask(gateway: &TestGateway, body: &Value) -> String {
    let response = gateway.post("/v1/chat/completions", None, body).await;
    assert_eq!(response.status(), 200);
    status_of(&response)
}

/// After "What is the capital of France?" was stored: an unrelated question,
/// and the paraphrase under another system prompt, are misses.
async fn unrelated_and_reframed_questions_miss(gateway: &TestGateway) {
    let unrelated = question(None, "How do I bake sourdough bread at home?");
    assert_eq!(ask(gateway, &unrelated).await, "miss");
    let reframed = question(
        Some("You are a pirate."),
        "What is the capital of France, please?",
    );
    assert_eq!(
        ask(gateway, &reframed).await,
        "miss",
        "a different system prompt is a different partition"
    );
}

/// With the semantic cache on, the leader looks up the store and embeds the
/// question before calling the upstream: identical requests arriving during
/// those awaits must join its flight, not race it to the upstream.
#[tokio::test]
async fn identical_calls_in_flight_reach_the_upstream_once_with_the_semantic_cache_on() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(300)));
    let gateway =
        TestGateway::start(&semantic_config(&upstream, "mock = { latency = \"20ms\" }")).await;
    let request = question(None, "What is the capital of France?");
    let calls = (0..10).map(|_| async {
        let response = gateway.post("/v1/chat/completions", None, &request).await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    });
    let bodies = futures_util::future::join_all(calls).await;
    assert_eq!(upstream.calls(), 1, "only chat calls reach this upstream");
    assert!(
        bodies
            .iter()
            .all(|b| b == &bodies[0] && b.contains("from oa"))
    );
}

/// The same for streams: joiners follow the leader's one upstream stream.
#[tokio::test]
async fn identical_streams_in_flight_share_one_upstream_stream_with_the_semantic_cache_on() {
    let upstream = FakeUpstream::start("oa").await;
    let events = vec![chunk("a"), chunk("b"), done()];
    upstream.set_default(Behavior::Stream {
        events: events.clone(),
        interval: Duration::from_millis(100),
        gate: None,
    });
    let gateway =
        TestGateway::start(&semantic_config(&upstream, "mock = { latency = \"20ms\" }")).await;
    let mut request = question(None, "What is the capital of France?");
    request["stream"] = true.into();
    let calls = (0..10).map(|_| async {
        let response = gateway.post("/v1/chat/completions", None, &request).await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    });
    let texts = futures_util::future::join_all(calls).await;
    assert_eq!(upstream.calls(), 1, "only chat calls reach this upstream");
    let expected = events.concat();
    assert!(texts.iter().all(|t| t == &expected), "{texts:?}");
}

#[tokio::test]
async fn a_paraphrase_is_a_semantic_hit_and_unrelated_or_differently_framed_ones_are_not() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway =
        TestGateway::start(&semantic_config(&upstream, "mock = { latency = \"1ms\" }")).await;
    assert_eq!(
        ask(&gateway, &question(None, "What is the capital of France?")).await,
        "miss"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Same words plus one more: cosine 6/sqrt(42) = 0.93 with bag-of-words vectors.
    assert_eq!(
        ask(
            &gateway,
            &question(None, "What is the capital of France, please?")
        )
        .await,
        "semantic-hit"
    );
    unrelated_and_reframed_questions_miss(&gateway).await;
    assert_eq!(upstream.calls(), 3);
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_cache_requests_total{result="semantic_hit"} 1"#),
        "{metrics}"
    );
}

/// While the model is degraded, `degraded_threshold` lets a looser
/// paraphrase answer; otherwise it is a miss.
#[tokio::test]
async fn a_degraded_model_takes_looser_semantic_matches() {
    const ADMIN: &str = "admin-token-0123456789";
    let upstream = FakeUpstream::start("oa").await;
    let toml = semantic_config_with(
        &upstream,
        "mock = { latency = \"1ms\" }",
        "",
        "degraded_threshold = 0.8",
    ) + &format!("\n[admin]\ntoken = \"{ADMIN}\"\n");
    let gateway = TestGateway::start(&toml).await;
    let france = "What is the capital of France";
    assert_eq!(
        ask(&gateway, &question(None, &format!("{france}?"))).await,
        "miss"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two more words: cosine 6/sqrt(48) = 0.87, under 0.9, over 0.8.
    let looser = question(None, &format!("{france}, please, today?"));
    assert_eq!(ask(&gateway, &looser).await, "miss");

    let forced = gateway
        .post(
            "/admin/models/gpt-4o/level",
            Some(ADMIN),
            &json!({"level": 2}),
        )
        .await;
    assert_eq!(forced.status(), 200);
    let looser = question(None, &format!("{france}, tell me?"));
    let response = gateway.post("/v1/chat/completions", None, &looser).await;
    assert_eq!(response.status(), 200);
    assert_eq!(status_of(&response), "semantic-hit");
    assert_eq!(
        response.headers().get("x-sluice-degraded").unwrap(),
        "cached"
    );
    assert_eq!(upstream.calls(), 2, "only chat calls reach this upstream");
}

#[tokio::test]
async fn a_slow_embedding_call_just_makes_a_miss() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway =
        TestGateway::start(&semantic_config(&upstream, "mock = { latency = \"2s\" }")).await;
    let started = std::time::Instant::now();
    assert_eq!(
        ask(&gateway, &question(None, "What is the capital of France?")).await,
        "miss"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "bounded by the 500ms timeout"
    );
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn replicas_share_semantic_matches_through_pgvector() {
    let database = TestDatabase::create(postgres::WITH_PGVECTOR).await;
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start("oa").await;
    let shared = format!(
        "[redis]\nurl = \"{}\"\n{}",
        redis.url(),
        semantic_config_with(
            &upstream,
            "mock = { latency = \"1ms\" }",
            "store = \"redis\"\nscope = \"global\"",
            &format!(
                "store = \"postgres\"\npostgres_url = \"{}\"",
                database.url()
            ),
        )
    );
    let first = TestGateway::start(&shared).await;
    let second = TestGateway::start(&shared).await;
    let (index, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let indexed = async || -> i64 {
        let count = index
            .query_one("SELECT COUNT(*) FROM sluice_semantic_cache", &[])
            .await;
        count.map_or(0, |row| row.get(0))
    };

    // Redis connects in the background: ask until the answer is stored.
    let france = question(None, "What is the capital of France?");
    for _ in 0..100 {
        ask(&first, &france).await;
        if indexed().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(indexed().await, 1, "the first replica indexed its answer");
    let paraphrase = question(None, "What is the capital of France, please?");
    assert_eq!(ask(&second, &paraphrase).await, "semantic-hit");
    unrelated_and_reframed_questions_miss(&second).await;
    let hnsw = index
        .query_one(
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname LIKE 'sluice_semantic_cache_hnsw_%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        hnsw.get::<_, i64>(0),
        1,
        "an HNSW index for the embedding size"
    );

    // Expired rows never match.
    index
        .execute(
            "UPDATE sluice_semantic_cache SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ask(&second, &paraphrase).await, "miss");
    drop((first, second));
    database.drop_database().await;
}

#[tokio::test]
async fn an_unreachable_pgvector_index_just_makes_misses() {
    let upstream = FakeUpstream::start("oa").await;
    let unreachable = "postgres://postgres@127.0.0.1:9/nothing";
    let gateway = TestGateway::start(&semantic_config_with(
        &upstream,
        "mock = { latency = \"1ms\" }",
        "",
        &format!("store = \"postgres\"\npostgres_url = \"{unreachable}\""),
    ))
    .await;
    let france = question(None, "What is the capital of France?");
    assert_eq!(ask(&gateway, &france).await, "miss");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ask(&gateway, &france).await,
        "hit",
        "the exact cache still works"
    );
    let paraphrase = question(None, "What is the capital of France, please?");
    assert_eq!(ask(&gateway, &paraphrase).await, "miss");
    let metrics = gateway.metrics().await;
    assert!(
        !metrics.contains("sluice_cache_store_errors_total 0"),
        "index failures are counted: {metrics}"
    );
}

/// A semantic lookup's embedding runs through the pipeline as a call of the
/// key it serves: it is metered (tokens by the embedding deployment), and it
/// spends the key's tokens but not its requests, so a key with `rpm = 2`
/// still gets two chat answers, and the third is refused.
#[tokio::test]
async fn semantic_embeddings_are_metered_calls_of_the_key_that_spare_its_request_count() {
    let upstream = FakeUpstream::start("oa").await;
    let config = semantic_config(&upstream, "mock = { latency = \"1ms\" }")
        + r#"
        [[keys]]
        name = "team"
        key = "sk-team-00000000"
        rpm = 2
        "#;
    let gateway = TestGateway::start(&config).await;
    let key = Some("sk-team-00000000");
    for text in ["What is the capital of France?", "How do I bake bread?"] {
        let answer = gateway
            .post("/v1/chat/completions", key, &question(None, text))
            .await;
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    let third = question(None, "Which river crosses Paris?");
    let refused = gateway.post("/v1/chat/completions", key, &third).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(upstream.calls(), 2, "the third never reached the upstream");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_tokens_total{deployment="embedder",model="text-embedding-3-small",type="prompt"}"#),
        "{metrics}"
    );
}
