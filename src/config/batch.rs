//! `[batch]`: the Files and Batch API's store, limits and runner.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Where files, batches and asynchronous jobs are recorded: `"sqlite"`
    /// (`jobs.sqlite` in `[usage] data_dir`), `"sqlite:PATH"` or a path
    /// ending in `.sqlite`/`.db`, a `postgres://` URL (a fleet shares it),
    /// or `"none"` (no Files, Batch or asynchronous API).
    pub store: String,
    /// Where file bytes are kept; `files` in `[usage] data_dir` when empty.
    /// A fleet on PostgreSQL points every replica at one shared directory.
    pub files_dir: String,
    /// Largest upload; bigger ones get 413 while they stream in.
    pub max_file_bytes: u64,
    /// Most bytes of files one key may keep (uploads and its batches'
    /// output); an upload past it gets 400 until files are deleted or
    /// expire. Batch output is always written.
    pub max_stored_bytes_per_key: u64,
    /// Most batches one key may have open (validating, in progress,
    /// finalizing or cancelling); more get 429.
    pub max_open_batches_per_key: usize,
    /// Most lines a batch input file may hold.
    pub max_lines: usize,
    /// Most batch lines this replica has in flight at once (all batches).
    /// The runner adapts below it: it backs off on 429s and on queueing.
    pub max_concurrency: usize,
    /// Fraction taken off the price of batch lines (0.5 = half price).
    pub discount: f64,
    /// Fraction taken off the price of batches forwarded to a provider's
    /// Batch API (`batch = "upstream"`): the provider's own batch price cut.
    pub upstream_discount: f64,
    /// Files and batches are visible to every key of the creator's org,
    /// not only to the key that made them.
    pub share_with_org: bool,
    /// How long a replica's claim on a batch lasts without a heartbeat; a
    /// batch whose runner stopped is taken over after this.
    #[serde(with = "duration::serde_duration")]
    pub lease: Duration,
    /// How often a replica looks for batches and jobs to run.
    #[serde(with = "duration::serde_duration")]
    pub poll_interval: Duration,
    /// How long a batch waits after its key's budget is spent before it
    /// tries again (the batch pauses instead of failing its lines).
    #[serde(with = "duration::serde_duration")]
    pub budget_pause: Duration,
    /// How often a batch forwarded to a provider's Batch API
    /// (`batch = "upstream"` on its deployment) is polled there.
    #[serde(with = "duration::serde_duration")]
    pub upstream_poll_interval: Duration,
}

impl BatchConfig {
    /// Where file bytes live: `files_dir`, or `files` in `data_dir`.
    pub fn files_dir_in(&self, data_dir: &str) -> std::path::PathBuf {
        match self.files_dir.as_str() {
            "" => std::path::Path::new(data_dir).join("files"),
            dir => dir.into(),
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            store: "sqlite".to_owned(),
            files_dir: String::new(),
            max_file_bytes: 200 * 1024 * 1024,
            max_stored_bytes_per_key: 10 * 1024 * 1024 * 1024,
            max_open_batches_per_key: 100,
            max_lines: 50_000,
            max_concurrency: 64,
            discount: 0.0,
            upstream_discount: 0.5,
            share_with_org: false,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            budget_pause: Duration::from_secs(60),
            upstream_poll_interval: Duration::from_secs(30),
        }
    }
}
