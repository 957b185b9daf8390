//! Spend budgets end to end: charges from real usage, alerts POSTed to a
//! webhook once per threshold, and 429 `insufficient_quota` once spent.
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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use common::gateway::{chat, deployment, error_of, throttled_with_fallback};
use common::{FakeUpstream, TestGateway};
use serde_json::Value;

const ADMIN: &str = "admin-token-0123456789";

async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/alerts",
            post(
                |State(seen): State<Arc<Mutex<Vec<Value>>>>, body: String| async move {
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).unwrap());
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn send(gateway: &TestGateway, key: &str) -> reqwest::Response {
    let response = gateway
        .post("/v1/chat/completions", Some(key), &chat("gpt-4o"))
        .await;
    // Charges land off the request path; let them settle.
    tokio::time::sleep(Duration::from_millis(30)).await;
    response
}

#[tokio::test]
async fn alerts_once_per_threshold_then_refuses_with_insufficient_quota() {
    let upstream = FakeUpstream::start("oa").await;
    let (url, alerts) = webhook().await;
    // Each call: 2 fresh + 3 cached prompt and 2 completion tokens at gpt-4o
    // prices = $0.00002875; the budget is $0.0001, so call 4 crosses 100%.
    let gateway = TestGateway::start(&format!(
        "[alerts]\nwebhook_url = \"{url}\"\n{}[[keys]]\nname = \"team\"\nkey = \"sk-team-0000000\"\nbudget_daily_usd = 0.0001\n",
        deployment("oa", &upstream, "")
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(send(&gateway, "sk-team-0000000").await.status(), 200);
    }
    let refused = send(&gateway, "sk-team-0000000").await;
    assert_eq!(refused.status(), 429);
    let error = error_of(refused).await;
    assert_eq!(error["type"], "insufficient_quota");
    assert_eq!(error["code"], "insufficient_quota");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("The daily budget of $0.0001 for key `team` is spent ($0.000115 used)"),
        "{message}"
    );
    assert!(
        message.contains("resets at ") && message.ends_with("T00:00:00Z."),
        "{message}"
    );
    assert_eq!(upstream.calls(), 4, "the refused call never went upstream");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let alerts = alerts.lock().unwrap().clone();
    let thresholds: Vec<f64> = alerts
        .iter()
        .map(|a| a["threshold"].as_f64().unwrap())
        .collect();
    assert_eq!(thresholds.len(), 4, "{alerts:?}");
    for expected in [0.5, 0.75, 0.9, 1.0] {
        assert_eq!(
            thresholds.iter().filter(|t| **t == expected).count(),
            1,
            "{expected} once: {alerts:?}"
        );
    }
    let first = &alerts[0];
    assert_eq!(first["type"], "budget_alert");
    assert_eq!(first["scope"], "key");
    assert_eq!(first["name"], "team");
    assert_eq!(first["period"], "daily");
    assert!(
        gateway
            .metrics()
            .await
            .contains(r#"sluice_budget_rejected_total{scope="key"} 1"#)
    );
}

#[tokio::test]
async fn an_org_budget_is_shared_by_its_keys() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "{}[org_budgets.research]\nbudget_monthly_usd = 0.00005\n[[keys]]\nname = \"a\"\nkey = \"sk-a-000000000\"\norg = \"research\"\n[[keys]]\nname = \"b\"\nkey = \"sk-b-000000000\"\norg = \"research\"\n",
        deployment("oa", &upstream, "")
    ))
    .await;
    assert_eq!(send(&gateway, "sk-a-000000000").await.status(), 200);
    assert_eq!(
        send(&gateway, "sk-b-000000000").await.status(),
        200,
        "57.5% of the budget: still open"
    );
    let refused = send(&gateway, "sk-a-000000000").await;
    assert_eq!(
        refused.status(),
        429,
        "two calls spent the org's budget for both keys"
    );
    let message = error_of(refused).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("monthly budget") && message.contains("org `research`"),
        "{message}"
    );
}

#[tokio::test]
async fn replicas_share_one_budget_through_redis() {
    let redis = common::redis::RedisServer::start().await;
    let upstream = FakeUpstream::start("oa").await;
    let config = format!(
        "[admin]\ntoken = \"{ADMIN}\"\n[redis]\nurl = \"{}\"\n{}[[keys]]\nname = \"team\"\nkey = \"sk-team-0000000\"\nbudget_daily_usd = 0.00005\n",
        redis.url(),
        deployment("oa", &upstream, "")
    );
    let first = TestGateway::start(&config).await;
    let second = TestGateway::start(&config).await;
    // Spend on the first replica until it is connected and has charged twice.
    let mut served = 0;
    for _ in 0..100 {
        if send(&first, "sk-team-0000000").await.status() == 429 {
            break;
        }
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served >= 2, "{served}");
    let refused = send(&second, "sk-team-0000000").await;
    assert_eq!(
        refused.status(),
        429,
        "the other replica sees the same spend"
    );
    assert_eq!(error_of(refused).await["code"], "insufficient_quota");
    // The first replica sent the alerts; the other one reports them sent.
    let budgets = second.get_json("/admin/budgets", Some(ADMIN)).await;
    let sent = serde_json::json!([0.5, 0.75, 0.9, 1.0]);
    assert_eq!(budgets["data"][0]["alerts_sent"], sent, "{budgets}");
}

#[tokio::test]
async fn a_fallback_is_billed_at_the_model_that_served() {
    let (_big, _small, fallback) = throttled_with_fallback().await;
    let dir = std::env::temp_dir().join(format!("sluice-budget-{}", fastrand::u64(..)));
    // Each call: 2 fresh + 3 cached prompt and 2 completion tokens. At
    // gpt-4.1-mini prices that is $0.0000043; at gpt-4.1's, $0.0000215,
    // which would spend the $0.00001 budget in one call.
    let gateway = TestGateway::start(&format!(
        "[usage]\nstore = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"20ms\"\n[admin]\ntoken = \"{ADMIN}\"\n{fallback}[[keys]]\nname = \"team\"\nkey = \"sk-team-0000000\"\nbudget_daily_usd = 0.00001\n",
        dir.display(),
    ))
    .await;
    for _ in 0..3 {
        let response = gateway
            .post(
                "/v1/chat/completions",
                Some("sk-team-0000000"),
                &chat("gpt-4.1"),
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sluice-model"], "gpt-4.1-mini");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let billed = 3.0 * 4.3e-6;
    let budgets = gateway.get_json("/admin/budgets", Some(ADMIN)).await;
    let spent = budgets["data"][0]["spent_usd"].as_f64().unwrap();
    assert!((spent - billed).abs() < 1e-12, "{budgets}");
    // Past the whole budget: every default threshold has sent its alert.
    let sent = serde_json::json!([0.5, 0.75, 0.9, 1.0]);
    assert_eq!(budgets["data"][0]["alerts_sent"], sent, "{budgets}");
    let usage = gateway
        .get_json("/admin/usage?group_by=model", Some(ADMIN))
        .await;
    let row = &usage["data"][0];
    assert_eq!(row["group"], "gpt-4.1-mini", "{usage}");
    let recorded = row["cost_usd"].as_f64().unwrap();
    assert!((recorded - billed).abs() < 1e-12, "{usage}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_unreadable_shared_budget_follows_redis_on_error() {
    let mut redis = common::redis::RedisServer::start().await;
    let upstream = FakeUpstream::start("oa").await;
    let config = |on_error: &str| {
        format!(
            "[redis]\nurl = \"{}\"\non_error = \"{on_error}\"\ntimeout = \"200ms\"\n{}[[keys]]\nname = \"team\"\nkey = \"sk-team-0000000\"\nbudget_daily_usd = 1.0\n",
            redis.url(),
            deployment("oa", &upstream, "")
        )
    };
    let open = TestGateway::start(&config("fail_open")).await;
    let closed = TestGateway::start(&config("fail_closed")).await;
    // Both connected: served.
    for gateway in [&open, &closed] {
        let mut status = 0;
        for _ in 0..100 {
            status = send(gateway, "sk-team-0000000").await.status().as_u16();
            if status == 200 {
                break;
            }
        }
        assert_eq!(status, 200);
    }

    redis.stop();
    let refused = send(&closed, "sk-team-0000000").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_of(refused).await["code"], "budget_store_unavailable");
    assert_eq!(send(&open, "sk-team-0000000").await.status(), 200);
    for gateway in [&open, &closed] {
        let metrics = gateway.metrics().await;
        let errors = metrics
            .lines()
            .find_map(|line| line.strip_prefix("sluice_budget_store_errors_total "))
            .and_then(|value| value.parse::<u64>().ok());
        assert!(errors.is_some_and(|n| n >= 1), "{metrics}");
    }
}
