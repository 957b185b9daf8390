//! The real `sluice` binary as a child process, for the tests that kill it
//! and the benches that read its memory. Benches include this file by path.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "shared by tests that each use part of it; a test fails by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a started gateway may take to answer `/healthz`.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a gateway may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stops a server that has workers of its own (nginx) with SIGTERM, so its
/// master takes the workers down with it: after a SIGKILL they would stay
/// behind, orphaned, holding the listening socket. SIGKILL after 2 s.
pub fn stop_with_workers(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The binary tests run: this build's, or `SLUICE_BIN` (another build,
/// such as the release one).
pub fn binary() -> String {
    std::env::var("SLUICE_BIN").unwrap_or(env!("CARGO_BIN_EXE_sluice").into())
}

/// The gateway process, killed on drop; its log goes to a file.
pub struct SluiceProcess {
    pub child: Child,
    pub url: String,
    log: PathBuf,
    /// A directory removed once the process has stopped (see `owning`).
    dir: Option<TempDir>,
}

impl SluiceProcess {
    /// Writes `config` (which must listen on `port`) to `dir/sluice-NAME.toml`,
    /// starts the binary on it (`SLUICE_BIN` runs another build, such as
    /// the release one) and waits until it answers.
    pub async fn start(dir: &Path, name: &str, port: u16, config: &str) -> Self {
        Self::start_with_env(dir, name, port, config, &[]).await
    }

    /// As `start`, with `env` added to the process's environment.
    pub async fn start_with_env(
        dir: &Path,
        name: &str,
        port: u16,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_binary(&binary(), dir, name, port, config, env).await
    }

    /// As `start_with_env`, running `binary` (another build, to compare).
    pub async fn start_binary(
        binary: &str,
        dir: &Path,
        name: &str,
        port: u16,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let config_path = dir.join(format!("sluice-{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join(format!("sluice-{name}.log"));
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .env_remove("SLUICE_CONFIG")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let sluice = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            dir: None,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + START_DEADLINE;
        let mut sluice = sluice;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = sluice.child.try_wait() {
                panic!(
                    "sluice ({binary}) exited at start ({status}): {}",
                    sluice.log_text()
                );
            }
            let health = client.get(format!("{}/healthz", sluice.url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return sluice;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("sluice ({binary}) did not start: {}", sluice.log_text());
    }

    /// Makes `dir` (its config, log and data) go with the process.
    pub fn owning(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Uploads `bytes` as a `purpose=batch` file for `key`; its id.
    pub async fn upload_batch_file(&self, key: &str, bytes: Vec<u8>) -> String {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name("input.jsonl"),
            );
        let response = reqwest::Client::new()
            .post(format!("{}/v1/files", self.url))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "upload refused");
        let file: serde_json::Value = response.json().await.unwrap();
        file["id"].as_str().unwrap().to_owned()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and reap it.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then its exit status and log.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.unwrap().success());
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sluice did not stop on SIGTERM: {}", self.log_text());
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
