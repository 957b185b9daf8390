//! The connection layer against hostile clients, over real sockets: slow
//! request heads, idle keep-alive connections (HTTP/1 and HTTP/2), dripping
//! bodies, the connection cap, and the admin and metrics listeners.
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

use common::TestGateway;
use common::gateway::{chat, error_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A gateway on the mock provider, `server` lines added to `[server]`.
async fn gateway(server: &str, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[server]\n{server}\n[auth]\nrequired = false\n{extra}\n[[deployments]]\nname = \"m\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n"
    ))
    .await
}

/// Reads until the peer closes; the time that took, or `None` past `limit`.
/// With `drip`, writes one byte every 100 ms meanwhile, like a slowloris.
async fn closed_after(tcp: &mut TcpStream, drip: bool, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            read = tcp.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            _ = tick.tick(), if drip => {
                if tcp.write_all(b"x").await.is_err() {
                    return Some(started.elapsed());
                }
            }
            () = tokio::time::sleep_until(started + limit) => return None,
        }
    }
}

/// One raw HTTP/1.1 exchange on `tcp`; the response head and body as text.
async fn exchange(tcp: &mut TcpStream, request: &str) -> String {
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buffer))
            .await
            .expect("no response")
            .unwrap();
        response.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.trim().parse::<usize>().ok());
            if read == 0 || length.is_some_and(|length| body.len() >= length) {
                return text;
            }
        }
        assert!(read > 0, "closed mid-response: {text:?}");
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: sluice\r\n\r\n")
}

#[tokio::test]
async fn slow_request_heads_are_closed_after_the_header_timeout_while_requests_pass() {
    let gateway = gateway("header_read_timeout = \"300ms\"", "").await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
        tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(tcp);
    }
    let drips = slow
        .iter_mut()
        .map(|tcp| closed_after(tcp, true, Duration::from_secs(3)));
    let (closed, answer) = tokio::join!(futures_util::future::join_all(drips), async {
        gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await
    });
    assert_eq!(answer.status(), 200);
    for elapsed in closed {
        let elapsed = elapsed.expect("a slowloris connection stayed open");
        assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    }
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_closed_too() {
    let gateway = gateway(
        "header_read_timeout = \"300ms\"\nidle_timeout = \"10s\"",
        "",
    )
    .await;
    let mut tcp = kept_alive(&gateway).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let elapsed = closed_after(&mut tcp, true, Duration::from_secs(3)).await;
    let elapsed = elapsed.expect("the slow second head was not cut");
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
}

#[tokio::test]
async fn idle_http1_connections_close_after_the_idle_timeout_not_the_header_one() {
    let gateway = gateway(
        "header_read_timeout = \"200ms\"\nidle_timeout = \"700ms\"",
        "",
    )
    .await;
    let mut tcp = kept_alive(&gateway).await;
    let elapsed = closed_after(&mut tcp, false, Duration::from_secs(3)).await;
    let elapsed = elapsed.expect("the idle connection stayed open");
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
}

#[tokio::test]
async fn idle_http2_connections_get_a_goaway_after_the_idle_timeout() {
    let gateway = gateway("idle_timeout = \"400ms\"", "").await;
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(gateway.url("/healthz"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), connection)
        .await
        .expect("the idle HTTP/2 connection stayed open")
        .unwrap()
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_dripping_body_is_answered_408_and_the_connection_closed() {
    let gateway = gateway("body_read_timeout = \"300ms\"", "").await;
    let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let started = Instant::now();
    tcp.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            tokio::select! {
                read = tcp.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(read) => response.extend_from_slice(&buffer[..read]),
                },
                _ = tick.tick() => { let _ = tcp.write_all(b" ").await; }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    let body: serde_json::Value =
        serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn connections_past_the_cap_get_a_clear_503_and_the_gauge_counts_them() {
    let gateway = gateway("max_connections = 3", "").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    let scrape = exchange(&mut open[0], &get("/metrics")).await;
    assert!(scrape.contains("\nsluice_connections 3\n"), "{scrape}");

    let refused = reqwest::Client::new()
        .get(gateway.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["connection"], "close");
    let error = error_of(refused).await;
    assert_eq!(error["code"], "server_overloaded");

    open.truncate(1);
    let mut admitted = false;
    for _ in 0..50 {
        let response = reqwest::Client::new()
            .get(gateway.url("/healthz"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "closed connections did not free their slots");
    let scrape = exchange(&mut open[0], &get("/metrics")).await;
    assert!(!scrape.contains("\nsluice_connections 3\n"), "{scrape}");
}

#[tokio::test]
async fn admin_and_metrics_are_served_only_on_their_own_listeners() {
    let gateway = gateway(
        "",
        "[admin]\ntoken = \"admin-secret-0123456789\"\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    let client = reqwest::Client::new();
    let status = |url: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(url)
                .bearer_auth("admin-secret-0123456789")
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let admin = |path| TestGateway::url_at(gateway.admin_addr, path);
    let metrics = |path| TestGateway::url_at(gateway.metrics_addr, path);

    for path in ["/admin/deployments", "/metrics"] {
        let (code, body) = status(gateway.url(path)).await;
        assert_eq!(code, 404, "{path} on the API listener");
        assert!(body.contains("unknown_url"), "{body}");
    }
    assert_eq!(status(gateway.url("/healthz")).await.0, 200);
    assert_eq!(status(admin("/admin/deployments")).await.0, 200);
    assert_eq!(status(admin("/metrics")).await.0, 404);
    assert_eq!(status(admin("/v1/models")).await.0, 404);
    let (code, scrape) = status(metrics("/metrics")).await;
    assert_eq!(code, 200);
    assert!(scrape.contains("sluice_connections"), "{scrape}");
    assert_eq!(status(metrics("/admin/deployments")).await.0, 404);
}

#[tokio::test]
async fn shutdown_closes_every_listener_and_idle_connections_do_not_hold_it() {
    let mut gateway = gateway(
        "shutdown_grace = \"10s\"\nidle_timeout = \"60s\"",
        "[metrics]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    let mut idle = TcpStream::connect(gateway.addr).await.unwrap();
    assert!(
        exchange(&mut idle, &get("/healthz"))
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut idle_metrics = TcpStream::connect(gateway.metrics_addr.unwrap())
        .await
        .unwrap();
    assert!(
        exchange(&mut idle_metrics, &get("/metrics"))
            .await
            .starts_with("HTTP/1.1 200")
    );

    gateway.shutdown();
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("idle connections held the shutdown")
        .unwrap();
    for addr in [gateway.addr, gateway.metrics_addr.unwrap()] {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }
    assert!(
        closed_after(&mut idle, false, Duration::from_secs(1))
            .await
            .is_some()
    );
}

/// A connection that has served one request and is kept alive.
async fn kept_alive(gateway: &TestGateway) -> TcpStream {
    let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
    assert!(
        exchange(&mut tcp, &get("/healthz"))
            .await
            .starts_with("HTTP/1.1 200")
    );
    tcp
}
