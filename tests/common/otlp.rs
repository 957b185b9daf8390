//! A real OTLP receiver for the tracing tests: `tests/otlp/receiver.py`,
//! which decodes every export with the official `opentelemetry-proto`
//! definitions, run from the project's Python venv (made on first use by
//! `scripts/py-venv.sh`, once per test binary).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

/// The venv's Python with the receiver's packages.
fn python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let status = Command::new(root.join("scripts/py-venv.sh"))
                .args([
                    "opentelemetry.proto, grpc",
                    "opentelemetry-proto>=1.30,<2",
                    "grpcio>=1.60,<2",
                ])
                .current_dir(&root)
                .status()
                .expect("scripts/py-venv.sh runs");
            assert!(status.success(), "the receiver's venv could not be made");
            root.join("target/py-venv/bin/python")
        })
        .clone()
}

pub struct Receiver {
    child: Child,
    pub http: u16,
    pub grpc: Option<u16>,
    client: reqwest::Client,
}

impl Receiver {
    /// Starts a receiver (with a gRPC port too when `grpc`); it exits
    /// when this handle drops and closes its stdin.
    pub fn start(grpc: bool) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/receiver.py");
        let mut command = Command::new(python());
        command.arg(script);
        if grpc {
            command.arg("--grpc");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let ports: Value = serde_json::from_str(&line).expect("the receiver's ports line");
        Self {
            child,
            http: u16::try_from(ports["http"].as_u64().unwrap()).unwrap(),
            grpc: ports["grpc"].as_u64().map(|p| u16::try_from(p).unwrap()),
            client: reqwest::Client::new(),
        }
    }

    /// The OTLP/HTTP base URL (`/v1/traces` is appended by Sluice).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.endpoint());
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn spans(&self) -> Vec<Value> {
        self.get("/spans").await.as_array().unwrap().clone()
    }

    pub async fn requests(&self) -> Vec<Value> {
        self.get("/requests").await.as_array().unwrap().clone()
    }

    pub async fn refused(&self) -> u64 {
        self.get("/refused").await.as_u64().unwrap()
    }

    /// The spans once at least `count` have arrived (within 10 s).
    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans().await;
            if spans.len() >= count || tokio::time::Instant::now() > deadline {
                assert!(
                    spans.len() >= count,
                    "{} of {count} spans: {spans:#?}",
                    spans.len()
                );
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `{"mode": "ok" | "refuse" | "reject" | "slow", "seconds": N}`.
    pub async fn set_mode(&self, mode: &str, seconds: f64) {
        let url = format!("{}/mode", self.endpoint());
        let body = json!({"mode": mode, "seconds": seconds});
        let response = self.client.post(url).json(&body).send().await.unwrap();
        assert!(response.status().is_success());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The span named `name`, or a panic listing the names there are.
pub fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| {
        let names: Vec<_> = spans.iter().map(|s| s["name"].clone()).collect();
        panic!("no span {name:?} among {names:?}")
    })
}

/// The spans whose parent is `parent`.
pub fn children<'a>(spans: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["parent_span_id"] == parent["span_id"])
        .collect()
}
