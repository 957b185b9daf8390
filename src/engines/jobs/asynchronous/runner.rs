//! The runner of asynchronous jobs on this replica: it claims queued jobs
//! (and those whose runner stopped renewing its lease), replays each
//! through the internal adapter as the key that asked, stores the answer
//! once and delivers the callback.
//!
//! Decisions:
//! - The job runs as the key itself, not `acting_internally`: the client
//!   chose the model, so the key's allow-list holds, and its RPM, TPM and
//!   budgets apply exactly as to a synchronous call (the accepting `202`
//!   stopped before the limiter, so the request counts once).
//! - Whatever the pipeline answers is the answer: a 429 or 503 is stored
//!   as is, like any status, since a synchronous call would have got it too.
//! - Execution is at least once (a replica that dies mid-call leaves a job
//!   that is run again once its lease runs out); the answer is stored
//!   exactly once, by a compare-and-set on the runner that holds it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::{Jobs, JobsError, unix_now, unix_now_ms};
use super::callback;
use super::record::{self, Answer, CALLBACK_PENDING, Job, Status};
use crate::engines::internal::ASYNC_TAG;
use crate::vocab::Identity;

/// The largest answer kept; a bigger one is stored as a 502.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Longest a job's call and the reading of its answer may take.
const JOB_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// How long a job whose model is in maintenance waits before it is looked at again.
const MAINTENANCE_RECHECK: Duration = Duration::from_millis(500);
/// The same for a job whose replay met maintenance: replays are not free
/// (each is a call through the pipeline, with its ledger record).
const REPLAYED_MAINTENANCE_RECHECK: Duration = Duration::from_secs(30);

/// How often expired jobs are deleted, and how many at a time.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const SWEEP_BATCH: usize = 1000;

struct Runner {
    jobs: Arc<Jobs>,
    /// `[async_requests] max_concurrency` jobs at once.
    slots: Arc<Semaphore>,
    callbacks: Option<reqwest::Client>,
}

/// Starts this replica's runner; it ends at shutdown.
pub fn start(jobs: &Arc<Jobs>) {
    let runner = Arc::new(Runner {
        slots: Arc::new(Semaphore::new(jobs.async_requests.max_concurrency.max(1))),
        callbacks: callback::client(jobs.async_requests.callback_timeout),
        jobs: jobs.clone(),
    });
    jobs.tasks.spawn(runner.run());
}

impl Runner {
    async fn run(self: Arc<Self>) {
        let jobs = &self.jobs;
        let mut poll =
            tokio::time::interval(jobs.batch.poll_interval.max(Duration::from_millis(10)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = poll.tick() => self.claim_some().await,
                () = jobs.async_wake.notified() => self.claim_some().await,
                _ = sweep.tick() => self.sweep().await,
                () = jobs.tasks.stopping() => return,
            }
        }
    }

    /// Claims as many open jobs as there are free slots, and starts them.
    async fn claim_some(self: &Arc<Self>) {
        let free = self.slots.available_permits();
        if free == 0 {
            return;
        }
        let db = &self.jobs.db;
        let ids = match record::claimable(db, unix_now_ms(), free).await {
            Ok(ids) => ids,
            Err(error) => return tracing::warn!(%error, "async jobs not polled"),
        };
        for id in ids {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                return;
            };
            // A token per claim, not the replica's name: a task whose job
            // was taken from it (an operator's cancel) must not renew or
            // answer it under a later claim of the same replica.
            let lease = format!("{}:{}", self.jobs.replica, super::super::new_id(""));
            match record::claim(db, &id, &lease, self.lease_until()).await {
                Ok(true) => {
                    let runner = self.clone();
                    self.jobs.tasks.spawn(runner.work(id, lease, slot));
                }
                Ok(false) => {}
                Err(error) => return tracing::warn!(%error, "async job not claimed"),
            }
        }
    }

    fn lease_until(&self) -> i64 {
        let lease = i64::try_from(self.jobs.batch.lease.as_millis()).unwrap_or(i64::MAX);
        unix_now_ms().saturating_add(lease)
    }

    /// One claimed job, while its lease is renewed; given back at shutdown
    /// or when the store fails, so another run picks it up.
    async fn work(self: Arc<Self>, id: String, lease: String, _slot: OwnedSemaphorePermit) {
        let jobs = &self.jobs;
        let release = tokio::select! {
            done = self.finish(&id, &lease) => match done {
                Ok(Finished::Done) => false,
                Ok(Finished::Waiting(recheck)) => {
                    let again = unix_now_ms().saturating_add(recheck.as_millis() as i64);
                    if let Err(error) = record::defer(&jobs.db, &id, &lease, again).await {
                        tracing::warn!(%error, job = %id, "async job not deferred");
                    }
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, job = %id, "async job not finished");
                    true
                }
            },
            () = self.keep_lease(&id, &lease) => false,
            () = jobs.tasks.stopping() => true,
        };
        if release && let Err(error) = record::release(&jobs.db, &id, &lease).await {
            tracing::warn!(%error, job = %id, "async job not released");
        }
    }

    /// Renews the lease every third of it; returns once it is lost (another
    /// runner took the job over and will store its answer).
    async fn keep_lease(&self, id: &str, lease: &str) {
        let every = (self.jobs.batch.lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let db = &self.jobs.db;
            match record::heartbeat(db, id, lease, self.lease_until()).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::warn!(%error, job = %id, "async job lease not renewed"),
            }
        }
    }

    /// Runs the job unless it has its answer, then delivers its callback;
    /// a job whose model is in maintenance is left to wait.
    async fn finish(&self, id: &str, lease: &str) -> Result<Finished, JobsError> {
        let db = &self.jobs.db;
        let Some(mut job) = record::load(db, id).await? else {
            return Ok(Finished::Done);
        };
        if job.status != Status::Completed {
            if model_of(&job).is_some_and(|model| self.jobs.internal.maintenance(&model)) {
                return Ok(Finished::Waiting(MAINTENANCE_RECHECK));
            }
            let answer = self.execute(&job).await;
            // The call met maintenance although its name did not say so (a
            // virtual name with a target still up, or a level set since the
            // check): it waits like any other, but is not replayed again
            // soon, since each replay goes through the pipeline.
            if is_maintenance(&answer) {
                return Ok(Finished::Waiting(REPLAYED_MAINTENANCE_RECHECK));
            }
            if !record::complete(db, id, lease, &answer).await? {
                return Ok(Finished::Done);
            }
            let result = if (200..300).contains(&answer.status) {
                "succeeded"
            } else {
                "failed"
            };
            self.count(result);
            job.status = Status::Completed;
            job.completed_at = Some(unix_now());
            job.answer = Some(answer);
        }
        if let (Some(url), Some(answer), Some(CALLBACK_PENDING)) =
            (&job.callback, &job.answer, job.callback_state.as_deref())
        {
            let payload = callback::payload(&job, answer);
            let state = callback::deliver(self.callbacks.as_ref(), url, &payload).await;
            record::callback_done(db, id, lease, state).await?;
            self.count(&format!("callback_{state}"));
        }
        Ok(Finished::Done)
    }

    /// The job's answer from the pipeline, or the error that stands for it.
    async fn execute(&self, job: &Job) -> Answer {
        let Some(identity) = self.jobs.identity_of(&job.owner) else {
            return error_answer(
                401,
                "The API key that made this request was revoked before it ran.",
                "invalid_request_error",
                "invalid_api_key",
            );
        };
        let Some(request) = replay(job, identity) else {
            return error_answer(
                500,
                "The stored request could not be replayed.",
                "server_error",
                "async_replay_failed",
            );
        };
        let call = async {
            let response = self.jobs.internal.call(request).await;
            read_answer(response).await
        };
        tokio::time::timeout(JOB_DEADLINE, call)
            .await
            .unwrap_or_else(|_| {
                error_answer(
                    504,
                    "The request did not finish within the gateway's time for asynchronous requests.",
                    "server_error",
                    "timeout",
                )
            })
    }

    fn count(&self, result: &str) {
        self.jobs
            .metrics
            .async_jobs
            .with_label_values(&[result])
            .inc();
    }

    async fn sweep(&self) {
        match record::sweep_expired(&self.jobs.db, unix_now(), SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "expired async jobs deleted"),
            Err(error) => tracing::warn!(%error, "expired async jobs not swept"),
        }
    }
}

/// What became of a claimed job.
enum Finished {
    /// Answered (or answered elsewhere), its callback attempted.
    Done,
    /// Its model is in maintenance: back to the queue for this long.
    Waiting(Duration),
}

/// Whether the pipeline refused the call because its model is in
/// maintenance (503 `maintenance`, `crate::engines::degrade`).
fn is_maintenance(answer: &Answer) -> bool {
    answer.status == 503
        && serde_json::from_slice::<serde_json::Value>(&answer.body)
            .is_ok_and(|body| body["error"]["code"] == "maintenance")
}

/// The model the stored call asks for (in its body, or an Azure-style path).
fn model_of(job: &Job) -> Option<String> {
    let path = job.path.split('?').next().unwrap_or_default();
    let path_model = match crate::engines::request::paths::classify(&http::Method::POST, path)? {
        crate::engines::request::paths::ApiCall::Proxy { path_model, .. } => path_model,
        _ => None,
    };
    let head = crate::engines::request::parse::parse_head(job.body.as_bytes(), path_model).ok()?;
    Some(head.model.into_owned())
}

/// The stored call, as the key that made it, tagged as asynchronous.
fn replay(job: &Job, identity: Arc<Identity>) -> Option<Request> {
    let mut request = Request::post(job.path.as_str())
        .header(crate::util::headers::X_SLUICE_TAG, ASYNC_TAG)
        .body(Body::from(job.body.clone()))
        .ok()?;
    let headers = request.headers_mut();
    for (name, value) in job.header_pairs() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    request.extensions_mut().insert(identity);
    Some(request)
}

/// Status, content type and the body, up to `MAX_ANSWER_BYTES`.
async fn read_answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
    match limited.collect().await {
        Ok(body) => Answer {
            status,
            content_type,
            body: body.to_bytes(),
        },
        Err(error) if error.is::<http_body_util::LengthLimitError>() => error_answer(
            502,
            &format!(
                "The answer was larger than the {MAX_ANSWER_BYTES} bytes kept for asynchronous requests."
            ),
            "server_error",
            "response_too_large",
        ),
        Err(_) => error_answer(
            502,
            "The answer could not be read to its end.",
            "server_error",
            "upstream_error",
        ),
    }
}

pub(super) fn error_answer(status: u16, message: &str, kind: &str, code: &str) -> Answer {
    Answer {
        status,
        content_type: Some("application/json".to_owned()),
        body: crate::vocab::error::error_body(message, kind, None, Some(code)),
    }
}
