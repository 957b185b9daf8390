//! Routing policies: priority routes, the auto router, canary splits, token
//! budgets and the degradation ladder.
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
use common::gateway::error_of;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

struct Fleet {
    big: FakeUpstream,
    mini: FakeUpstream,
    nano: FakeUpstream,
}

async fn fleet() -> Fleet {
    Fleet {
        big: FakeUpstream::start("big").await,
        mini: FakeUpstream::start("mini").await,
        nano: FakeUpstream::start("nano").await,
    }
}

fn deployments(fleet: &Fleet, big_extra: &str) -> String {
    format!(
        "[[deployments]]\nname = \"big\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4.1\"]\n{big_extra}\n[[deployments]]\nname = \"mini\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4.1-mini\"]\n[[deployments]]\nname = \"nano\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4.1-nano\"]\n",
        fleet.big.base_url(),
        fleet.mini.base_url(),
        fleet.nano.base_url()
    )
}

async fn post(gateway: &TestGateway, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn priority_routes_pick_a_model_per_class() {
    let fleet = fleet().await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n[[routes]]\nname = \"chat\"\ndefault = \"gpt-4.1-mini\"\nby_priority = {{ realtime = \"gpt-4.1\", batch = \"gpt-4.1-nano\" }}\n{}",
        deployments(&fleet, "")
    ))
    .await;
    for (class, served, upstream) in [
        ("realtime", "gpt-4.1", &fleet.big),
        ("standard", "gpt-4.1-mini", &fleet.mini),
        ("batch", "gpt-4.1-nano", &fleet.nano),
    ] {
        let response = post(
            &gateway,
            &ask("chat", "hi"),
            &[("x-sluice-priority", class)],
        )
        .await;
        assert_eq!(response.status(), 200, "{class}");
        assert_eq!(response.headers()["x-sluice-model"], served);
        assert_eq!(
            upstream.last().body["model"],
            served,
            "the upstream sees the real model"
        );
    }
    let models = gateway.get_json("/v1/models", None).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"chat"), "{ids:?}");
}

#[tokio::test]
async fn the_auto_router_picks_the_cheapest_capable_tier() {
    let fleet = fleet().await;
    let gateway = TestGateway::start(&format!(
        r#"
        [auth]
        required = false
        [[auto.tiers]]
        model = "gpt-4.1-nano"
        max_prompt_tokens = 40
        tools = false
        images = false
        keywords = ["prove", "step by step"]
        [[auto.tiers]]
        model = "gpt-4.1-mini"
        max_prompt_tokens = 400
        [[auto.tiers]]
        model = "gpt-4.1"
        {}"#,
        deployments(&fleet, "")
    ))
    .await;
    let served = |response: &reqwest::Response| {
        response.headers()["x-sluice-model"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        served(&post(&gateway, &ask("auto", "What time zone is Paris in?"), &[]).await),
        "gpt-4.1-nano"
    );
    assert_eq!(
        served(
            &post(
                &gateway,
                &ask("auto", "Prove that there are infinitely many primes."),
                &[]
            )
            .await
        ),
        "gpt-4.1-mini"
    );
    let mut with_tools = ask("auto", "Weather in Paris?");
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    assert_eq!(
        served(&post(&gateway, &with_tools, &[]).await),
        "gpt-4.1-mini"
    );
    let medium = "word ".repeat(100);
    assert_eq!(
        served(&post(&gateway, &ask("auto", &medium), &[]).await),
        "gpt-4.1-mini"
    );
    let long = "word ".repeat(1000);
    assert_eq!(
        served(&post(&gateway, &ask("auto", &long), &[]).await),
        "gpt-4.1"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_auto_decisions_total{tier="gpt-4.1-mini"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn canary_splits_are_sticky_and_weighted() {
    let fleet = fleet().await;
    let gateway = TestGateway::start(&format!(
        r#"
        [auth]
        required = false
        [[splits]]
        name = "assistant"
        [[splits.variants]]
        name = "control"
        model = "gpt-4.1"
        weight = 90
        [[splits.variants]]
        name = "brief"
        model = "gpt-4.1-mini"
        weight = 10
        temperature = 0.2
        system_prompt = "Be brief."
        {}"#,
        deployments(&fleet, "")
    ))
    .await;
    let variant_of = |response: &reqwest::Response| {
        response.headers()["x-sluice-variant"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let mut body = ask("assistant", "hi");
    body["user"] = "user-7".into();
    let first = variant_of(&post(&gateway, &body, &[]).await);
    for _ in 0..5 {
        assert_eq!(
            variant_of(&post(&gateway, &body, &[]).await),
            first,
            "a user sticks to one variant"
        );
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    let bodies: Vec<Value> = (0..2000)
        .map(|i| {
            let mut body = json!({"model": "assistant", "user": format!("u{i}"),
                                  "messages": [{"role": "system", "content": "Be verbose."}, {"role": "user", "content": "hi"}]});
            body["temperature"] = 1.0.into();
            body
        })
        .collect();
    use futures_util::StreamExt;
    let variants: Vec<String> = futures_util::stream::iter(bodies.iter())
        .map(|body| async { variant_of(&post(&gateway, body, &[]).await) })
        .buffer_unordered(32)
        .collect()
        .await;
    for variant in variants {
        *counts.entry(variant).or_default() += 1;
    }
    let brief = counts["brief"] as f64 / 2000.0;
    // 10% of 2000: 5 standard deviations is about ±3.4%.
    assert!((brief - 0.10).abs() < 0.034, "{counts:?}");
    let seen = fleet.mini.last().body;
    assert_eq!(seen["temperature"], 0.2);
    assert_eq!(
        seen["messages"][0],
        json!({"role": "system", "content": "Be brief."}),
        "the variant's system prompt"
    );
    assert_eq!(seen["messages"].as_array().unwrap().len(), 2);
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(
            r#"sluice_split_requests_total{outcome="ok",split="assistant",variant="brief"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_split_latency_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn token_budgets_refuse_long_prompts_and_clamp_output() {
    let fleet = fleet().await;
    let gateway = TestGateway::start(&format!(
        "{}[[keys]]\nname = \"small\"\nkey = \"sk-small-0000000\"\nmax_input_tokens = 20\nmax_output_tokens = 100\n",
        deployments(&fleet, "")
    ))
    .await;
    let send = |body: Value| {
        gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth("sk-small-0000000")
            .json(&body)
            .send()
    };
    let response = send(ask("gpt-4.1", &"word ".repeat(40))).await.unwrap();
    assert_eq!(response.status(), 400);
    let error = error_of(response).await;
    assert_eq!(error["code"], "context_length_exceeded");
    let message = error["message"].as_str().unwrap();
    // 3 per message + 1 for the role + 41 ("word" x 40 and the trailing space) + 3.
    assert!(
        message.contains("more than the 20 allowed") && message.contains("48 input tokens"),
        "{message}"
    );
    assert_eq!(fleet.big.calls(), 0);

    let mut capped = ask("gpt-4.1", "hi");
    capped["max_tokens"] = 500.into();
    assert_eq!(send(capped).await.unwrap().status(), 200);
    assert_eq!(fleet.big.last().body["max_tokens"], 100, "clamped");
    assert_eq!(send(ask("gpt-4.1", "hi")).await.unwrap().status(), 200);
    assert_eq!(
        fleet.big.last().body["max_completion_tokens"],
        100,
        "set when absent"
    );
    let mut small = ask("gpt-4.1", "hi");
    small["max_tokens"] = 10.into();
    send(small).await.unwrap();
    assert_eq!(
        fleet.big.last().body["max_tokens"],
        10,
        "a smaller request is left alone"
    );
}

#[tokio::test]
async fn standard_requests_degrade_to_the_cheaper_sibling_when_the_queue_is_long() {
    let fleet = fleet().await;
    fleet
        .big
        .set_default(Behavior::DelayHead(Duration::from_millis(300)));
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n[queue]\ndegrade_after = \"100ms\"\n[models.\"gpt-4.1\"]\ncheaper = \"gpt-4.1-mini\"\n{}",
        deployments(&fleet, "max_concurrency = 1")
    ))
    .await;
    // Learn the deployment's service time, then keep its one slot busy.
    assert_eq!(
        post(&gateway, &ask("gpt-4.1", "warm up"), &[])
            .await
            .status(),
        200
    );
    let busy_body = ask("gpt-4.1", "busy");
    let busy = post(&gateway, &busy_body, &[]);
    let later = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let standard = post(&gateway, &ask("gpt-4.1", "hi"), &[]).await;
        let realtime = post(
            &gateway,
            &ask("gpt-4.1", "hi"),
            &[("x-sluice-priority", "realtime")],
        )
        .await;
        (standard, realtime)
    };
    let (busy, (standard, realtime)) = tokio::join!(busy, later);
    assert_eq!(busy.status(), 200);
    assert_eq!(standard.status(), 200);
    assert_eq!(standard.headers()["x-sluice-degraded-from"], "gpt-4.1");
    assert_eq!(standard.headers()["x-sluice-model"], "gpt-4.1-mini");
    assert!(
        !realtime.headers().contains_key("x-sluice-degraded-from"),
        "only standard degrades"
    );
    assert_eq!(fleet.mini.calls(), 1);
}

/// A prompt over 32 KiB is counted on the blocking pool, with the same count
/// as inline; a body a policy rewrote carries the usage request of a stream
/// whose client did not ask for usage, which the client still does not see.
#[tokio::test]
async fn token_budgets_count_a_large_prompt_and_keep_the_usage_request() {
    let fleet = fleet().await;
    let gateway = TestGateway::start(&format!(
        "{}[[keys]]\nname = \"tight\"\nkey = \"sk-tight-0000000\"\nmax_input_tokens = 10007\n[[keys]]\nname = \"roomy\"\nkey = \"sk-roomy-0000000\"\nmax_input_tokens = 10008\nmax_output_tokens = 100\n",
        deployments(&fleet, "")
    ))
    .await;
    let send = |key: &'static str, body: Value| {
        gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let long = ask("gpt-4.1", &"word ".repeat(10_000));
    assert!(long.to_string().len() > 32 * 1024);
    let response = send("sk-tight-0000000", long.clone()).await.unwrap();
    assert_eq!(response.status(), 400);
    let message = error_of(response).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    // 3 per message + 1 for the role + 10001 + 3.
    assert!(message.contains("10008 input tokens"), "{message}");

    let mut streamed = long;
    streamed["stream"] = true.into();
    let usage = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10008,\"completion_tokens\":1,\"total_tokens\":10009}}\n\n";
    fleet.big.push(Behavior::Stream {
        events: vec![chunk("hi"), usage.to_owned(), done()],
        interval: Duration::ZERO,
        gate: None,
    });
    let response = send("sk-roomy-0000000", streamed).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let sent = fleet.big.last().body;
    assert_eq!(
        sent["max_completion_tokens"], 100,
        "rewritten by the budget"
    );
    assert_eq!(sent["stream_options"]["include_usage"], true, "usage asked");
    assert!(!text.contains("\"usage\":{"), "and hidden again: {text}");
}
