//! Rate limits shared through a real Redis: exact across replicas, and the
//! `on_error` policy when Redis goes away and comes back.
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

use common::gateway::{chat, error_of};
use common::redis::RedisServer;
use common::{FakeUpstream, TestGateway};

fn config(upstream: &FakeUpstream, redis: &RedisServer, on_error: &str) -> String {
    format!(
        r#"
        [redis]
        url = "{}"
        on_error = "{on_error}"
        timeout = "200ms"
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "{}"
        models = ["gpt-4o"]
        [[keys]]
        name = "shared"
        key = "sk-shared-0000000"
        rpm = 30
        "#,
        redis.url(),
        upstream.base_url()
    )
}

async fn send(gateway: &TestGateway) -> reqwest::Response {
    gateway
        .post(
            "/v1/chat/completions",
            Some("sk-shared-0000000"),
            &chat("gpt-4o"),
        )
        .await
}

/// Waits until the gateway's background connection to Redis is up.
async fn until_limited(gateway: &TestGateway) {
    for _ in 0..100 {
        let response = send(gateway).await;
        if response
            .headers()
            .contains_key("x-ratelimit-remaining-requests")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never reached Redis");
}

#[tokio::test]
async fn two_replicas_admit_exactly_one_combined_limit() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start("oa").await;
    let first = TestGateway::start(&config(&upstream, &redis, "fail_closed")).await;
    let second = TestGateway::start(&config(&upstream, &redis, "fail_closed")).await;
    until_limited(&first).await;
    until_limited(&second).await;

    let sends = (0..100).map(|i| {
        if i % 2 == 0 {
            send(&first)
        } else {
            send(&second)
        }
    });
    let responses = futures_util::future::join_all(sends).await;
    let admitted = responses.iter().filter(|r| r.status() == 200).count();
    // Two requests went in while waiting for the connections.
    assert_eq!(admitted + 2, 30, "one limit across both replicas");
    assert_eq!(
        responses.iter().filter(|r| r.status() == 429).count(),
        100 - admitted
    );
    let refused = responses.into_iter().find(|r| r.status() == 429).unwrap();
    assert!(refused.headers().contains_key("retry-after-ms"));
    assert_eq!(error_of(refused).await["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn fail_open_admits_while_redis_is_down_and_limits_again_after() {
    let mut redis = RedisServer::start().await;
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, &redis, "fail_open")).await;
    until_limited(&gateway).await;
    for _ in 0..29 {
        send(&gateway).await;
    }
    assert_eq!(
        send(&gateway).await.status(),
        429,
        "the limit holds while Redis is up"
    );

    redis.stop();
    for _ in 0..5 {
        let response = send(&gateway).await;
        assert_eq!(response.status(), 200, "fail_open admits without a limit");
        assert!(
            !response
                .headers()
                .contains_key("x-ratelimit-remaining-requests")
        );
    }
    let metrics = gateway.metrics().await;
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("sluice_limiter_store_errors_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(errors >= 5, "every store failure is counted: {metrics}");

    // A restarted Redis is empty: the bucket starts full, so limiting is seen
    // as headers first, then a 429 once 30 more went through.
    redis.restart().await;
    until_limited(&gateway).await;
    let mut statuses = Vec::new();
    for _ in 0..31 {
        statuses.push(send(&gateway).await.status().as_u16());
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "limiting resumed: {statuses:?}"
    );
}

#[tokio::test]
async fn fail_closed_refuses_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, &redis, "fail_closed")).await;
    until_limited(&gateway).await;
    redis.stop();
    let response = send(&gateway).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(error_of(response).await["code"], "rate_limiter_unavailable");
    let calls = upstream.calls();
    redis.restart().await;
    until_limited(&gateway).await;
    assert!(
        upstream.calls() > calls,
        "requests flow again once Redis is back"
    );
}

#[tokio::test]
async fn tpm_and_deployment_quotas_work_through_redis() {
    let redis = RedisServer::start().await;
    let small = FakeUpstream::start("small").await;
    let big = FakeUpstream::start("big").await;
    let gateway = TestGateway::start(&format!(
        r#"
        [redis]
        url = "{}"
        on_error = "fail_closed"
        [auth]
        required = false
        [[deployments]]
        name = "small"
        provider = "openai"
        base_url = "{}"
        models = ["gpt-4o"]
        rpm = 3
        [[deployments]]
        name = "big"
        provider = "openai"
        base_url = "{}"
        models = ["gpt-4o"]
        priority = 1
        tpm = 100000
        "#,
        redis.url(),
        small.base_url(),
        big.base_url()
    ))
    .await;
    // Fail closed until connected; the first admitted request goes to `small`.
    for _ in 0..100 {
        let response = gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await;
        if response.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..6 {
        assert_eq!(
            gateway
                .post("/v1/chat/completions", None, &chat("gpt-4o"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(small.calls(), 3, "small is used up to its quota");
    assert_eq!(big.calls(), 4, "the rest flows to the deployment with room");
}

/// `rediss://`: limits kept in a Redis reached over TLS, its certificate
/// checked against the system's roots (here a test CA named by
/// `SSL_CERT_FILE`, which the roots loader honours).
#[tokio::test]
async fn limits_work_over_tls() {
    use common::process::{SluiceProcess, TempDir, free_port};
    use std::process::Command;

    let dir = TempDir::new("sluice-redis-tls");
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&dir.0)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed (scripts/ensure-deps.sh installs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=sluice-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let tls_port = free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &tls_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args([
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--save",
            "",
        ])
        .current_dir(&dir.0)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[redis]\nurl = \"rediss://localhost:{tls_port}\"\non_error = \"fail_closed\"\n[usage]\nstore = \"none\"\n[batch]\nstore = \"none\"\n[[deployments]]\nname = \"m\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n[[keys]]\nname = \"k\"\nkey = \"sk-tls-000000000\"\nrpm = 3\n"
    );
    let ca = dir.join("ca.crt").display().to_string();
    let sluice =
        SluiceProcess::start_with_env(&dir.0, "tls", port, &config, &[("SSL_CERT_FILE", &ca)])
            .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    // fail_closed: a 503 means Redis was not reached; wait for the connection.
    for _ in 0..200 {
        let status = client
            .post(format!("{}/v1/chat/completions", sluice.url))
            .bearer_auth("sk-tls-000000000")
            .json(&chat("gpt-4o"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 503 {
            statuses.push(status);
        }
        if statuses.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, [200, 200, 200, 429], "{}", sluice.log_text());
    let _ = redis.kill();
    let _ = redis.wait();
}
