//! The job store's tables, in the SQL SQLite and PostgreSQL share. Times
//! are unix seconds (the API's unit) except leases, in milliseconds.
//!
//! - `sluice_files`: one row per file; its bytes are `files_dir/<id>`.
//! - `sluice_batches`: one row per batch: what the client asked, where it
//!   stands, and which replica runs it until when (`runner`, `lease_until`).
//!   A batch forwarded to a provider's Batch API names the deployment and
//!   the provider's batch id (`upstream_*`), and mirrors its counts and
//!   usage there.
//! - `sluice_batch_results`: one row per finished input line, keyed by
//!   (batch, line number): a line is recorded once whoever runs it, so a
//!   batch resumed after a crash or taken over skips what is recorded and
//!   its output holds each `custom_id` exactly once.
//! - `sluice_uploads` and `sluice_upload_parts`: a chunked upload and its
//!   parts (their bytes in `files_dir` under temporary names) until
//!   `complete` joins them into a file.
//! - `sluice_async_jobs`: one row per `Prefer: respond-async` call: the
//!   request as it will be replayed (never its credentials), where it
//!   stands, its runner's lease, the stored answer (`response_base64` = 1
//!   when the body was not UTF-8) and whether its callback was delivered.

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sluice_files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, org TEXT, purpose TEXT NOT NULL,
    filename TEXT NOT NULL, bytes BIGINT NOT NULL, created_at BIGINT NOT NULL,
    expires_at BIGINT);
CREATE INDEX IF NOT EXISTS sluice_files_listing ON sluice_files (created_at, id);
CREATE INDEX IF NOT EXISTS sluice_files_owner ON sluice_files (owner);
CREATE TABLE IF NOT EXISTS sluice_batches (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, org TEXT, status TEXT NOT NULL,
    endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL,
    metadata TEXT, output_expires_after BIGINT, model TEXT, total BIGINT NOT NULL,
    errors TEXT, output_file_id TEXT, error_file_id TEXT,
    created_at BIGINT NOT NULL, in_progress_at BIGINT, expires_at BIGINT NOT NULL,
    finalizing_at BIGINT, completed_at BIGINT, failed_at BIGINT, expired_at BIGINT,
    cancelling_at BIGINT, cancelled_at BIGINT,
    runner TEXT, lease_until BIGINT NOT NULL, paused_until BIGINT NOT NULL,
    upstream_deployment TEXT, upstream_batch_id TEXT, trace_parent TEXT,
    upstream_completed BIGINT, upstream_failed BIGINT, upstream_input_tokens BIGINT,
    upstream_output_tokens BIGINT, upstream_cached_tokens BIGINT);
CREATE INDEX IF NOT EXISTS sluice_batches_listing ON sluice_batches (created_at, id);
CREATE INDEX IF NOT EXISTS sluice_batches_owner ON sluice_batches (owner, status);
CREATE INDEX IF NOT EXISTS sluice_batches_open ON sluice_batches (status, lease_until);
CREATE TABLE IF NOT EXISTS sluice_batch_results (
    batch_id TEXT NOT NULL, line BIGINT NOT NULL, failed BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL, output TEXT NOT NULL,
    PRIMARY KEY (batch_id, line));
CREATE TABLE IF NOT EXISTS sluice_async_jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL,
    path TEXT NOT NULL, headers TEXT NOT NULL, body TEXT NOT NULL,
    callback TEXT, callback_state TEXT,
    response_status BIGINT, response_type TEXT, response_body TEXT,
    response_base64 BIGINT NOT NULL,
    created_at BIGINT NOT NULL, completed_at BIGINT, expires_at BIGINT NOT NULL,
    runner TEXT, lease_until BIGINT NOT NULL, attempts BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS sluice_async_jobs_open ON sluice_async_jobs (lease_until, created_at);
CREATE INDEX IF NOT EXISTS sluice_async_jobs_expiry ON sluice_async_jobs (expires_at);
CREATE INDEX IF NOT EXISTS sluice_async_jobs_owner ON sluice_async_jobs (owner, status);
CREATE TABLE IF NOT EXISTS sluice_uploads (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, org TEXT, filename TEXT NOT NULL,
    purpose TEXT NOT NULL, mime_type TEXT NOT NULL, bytes BIGINT NOT NULL,
    status TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
    file_id TEXT, file_expires_at BIGINT);
CREATE TABLE IF NOT EXISTS sluice_upload_parts (
    id TEXT PRIMARY KEY, upload_id TEXT NOT NULL, bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS sluice_upload_parts_upload ON sluice_upload_parts (upload_id);
";

/// Columns added after a table was first released, as `(table, column and
/// type)`: a store made before them gets them at start-up (`SCHEMA`'s
/// `CREATE TABLE IF NOT EXISTS` leaves an existing table as it is).
pub const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("sluice_batches", "upstream_deployment TEXT"),
    ("sluice_batches", "upstream_batch_id TEXT"),
    ("sluice_batches", "upstream_completed BIGINT"),
    ("sluice_batches", "upstream_failed BIGINT"),
    ("sluice_batches", "upstream_input_tokens BIGINT"),
    ("sluice_batches", "upstream_output_tokens BIGINT"),
    ("sluice_batches", "upstream_cached_tokens BIGINT"),
    ("sluice_batches", "trace_parent TEXT"),
];
