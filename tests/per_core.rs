//! `[server] runtime = "per_core"`: the binary hands each connection to one
//! of its worker threads, each with its own upstream pool. Calls on every
//! worker are answered, streams included, and a SIGTERM still drains a
//! stream in flight on a worker before the process exits.
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
use common::gateway::chat;
use common::process::{SluiceProcess, TempDir, free_port};
use common::{Behavior, FakeUpstream};
use futures_util::StreamExt;

/// Clients at once, each on a connection of its own.
const CLIENTS: usize = 9;
/// Calls per client: whole answers and streams in turn.
const CALLS: usize = 6;

fn config(port: u16, upstream: &FakeUpstream, runtime: &str, workers: usize) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nruntime = \"{runtime}\"\nworkers = {workers}\nshutdown_grace = \"10s\"\ndrain_delay = \"0s\"\n[auth]\nrequired = false\n[usage]\nstore = \"none\"\n[[deployments]]\nname = \"oa\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o\"]\n",
        upstream.base_url()
    )
}

/// An upstream that answers `stream: true` calls with SSE.
async fn upstream() -> FakeUpstream {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::Paced(Duration::from_millis(1)));
    upstream
}

async fn start(upstream: &FakeUpstream, runtime: &str, workers: usize) -> SluiceProcess {
    let dir = TempDir::new("sluice-per-core");
    let port = free_port();
    let config = config(port, upstream, runtime, workers);
    SluiceProcess::start(&dir.0, runtime, port, &config)
        .await
        .owning(dir)
}

/// The names of the process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `CLIENTS` clients on connections of their own, `CALLS` calls each;
/// every answer must be whole.
async fn load(url: &str) {
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let url = url.to_owned();
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for call in 0..CALLS {
                let mut body = chat("gpt-4o");
                let streamed = call % 2 == 1;
                body["stream"] = streamed.into();
                let response = client
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                assert_eq!(status, 200, "{text}");
                if streamed {
                    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
                } else {
                    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(answer["object"], "chat.completion", "{text}");
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test]
async fn every_worker_serves_calls_and_a_sigterm_drains_them() {
    let upstream = upstream().await;
    let sluice = start(&upstream, "per_core", 3).await;
    let names = thread_names(sluice.child.id());
    for worker in ["sluice-worker-1", "sluice-worker-2"] {
        assert!(names.iter().any(|name| name == worker), "{names:?}");
    }
    assert!(
        !names.iter().any(|name| name == "sluice-worker-3"),
        "{names:?}"
    );
    load(&sluice.url).await;
    assert_eq!(upstream.calls(), CLIENTS * CALLS);

    // A stream in flight on a worker thread when SIGTERM comes finishes;
    // then the process exits cleanly, its workers stopped.
    let gate = upstream.push_gated_stream(vec![chunk("a"), chunk("b"), done()]);
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sluice.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    assert_eq!(stream.next().await.unwrap().unwrap(), chunk("a").as_bytes());
    let stopping = tokio::spawn(sluice.terminate());
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(item) = stream.next().await {
        rest.extend_from_slice(&item.unwrap());
    }
    assert_eq!(String::from_utf8(rest).unwrap(), chunk("b") + &done());
    let (status, log) = stopping.await.unwrap();
    assert!(status.success(), "{status}: {log}");
}

#[tokio::test]
async fn the_shared_runtime_serves_the_same_calls() {
    let upstream = upstream().await;
    let sluice = start(&upstream, "shared", 2).await;
    let names = thread_names(sluice.child.id());
    assert!(
        !names.iter().any(|name| name.starts_with("sluice-worker")),
        "{names:?}"
    );
    load(&sluice.url).await;
    assert_eq!(upstream.calls(), CLIENTS * CALLS);
    let (status, log) = sluice.terminate().await;
    assert!(status.success(), "{status}: {log}");
}

/// One HTTP/2 connection (prior knowledge) carrying many calls at once, as
/// a proxy in front would: its streams are spread over the workers, and
/// every one is answered whole.
#[tokio::test]
async fn the_streams_of_one_http2_connection_are_all_answered() {
    const STREAMS: usize = 24;
    let upstream = upstream().await;
    let sluice = start(&upstream, "per_core", 3).await;
    let address = sluice.url.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut calls = Vec::new();
    for call in 0..STREAMS {
        let mut client = client.clone().ready().await.unwrap();
        let mut body = chat("gpt-4o");
        body["stream"] = (call % 2 == 1).into();
        let request = http::Request::post(format!("{}/v1/chat/completions", sluice.url))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(serde_json::to_vec(&body).unwrap().into(), true)
            .unwrap();
        calls.push(tokio::spawn(async move {
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            let mut text = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                text.extend_from_slice(&chunk);
            }
            String::from_utf8(text).unwrap()
        }));
    }
    for (call, answer) in calls.into_iter().enumerate() {
        let text = answer.await.unwrap();
        if call % 2 == 1 {
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        } else {
            assert!(text.contains("\"chat.completion\""), "{text}");
        }
    }
    assert_eq!(upstream.calls(), STREAMS);
}
