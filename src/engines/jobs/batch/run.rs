//! Runs an `in_progress` batch's lines: reads the input file in windows,
//! sends lines that share a prompt prefix one after another (so a provider's
//! prompt cache, and `prefix_affinity` routing, see them together), keeps
//! as many in flight as an adaptive limit allows, and records each result
//! once. Stops at cancel, expiry, a spent budget, a lost lease or shutdown.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::super::{Jobs, JobsError, unix_now};
use super::finalize;
use super::lease::{Lease, Step, record};
use super::line::{self, LineContext, Outcome};
use super::record::{Batch, Status};
use super::validate::{Lines, Read, is_blank};

/// Lines read ahead and reordered by prompt prefix.
const WINDOW: usize = 256;
/// The adaptive limit's start: it grows from here while lines succeed.
const START_LIMIT: usize = 8;

/// Why a run ends before every line is recorded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    Cancel,
    Expire,
    Pause,
    /// The batch's key was revoked while it ran.
    Revoked,
    /// The lease moved to another replica, or the gateway is stopping.
    Leave,
}

/// A line waiting to be sent.
struct Pending {
    index: i64,
    raw: Vec<u8>,
    /// When it was last started, in start order (see `Flight::cut_before`).
    started: u64,
}

/// The input file, read in windows, skipping recorded lines.
struct Source {
    lines: Lines,
    /// The 0-based request number of the next non-blank line.
    next_index: i64,
    recorded: Vec<bool>,
    /// Sorted by prefix, popped from the back.
    window: Vec<Pending>,
    exhausted: bool,
}

impl Source {
    async fn next(&mut self) -> std::io::Result<Option<Pending>> {
        if self.window.is_empty() && !self.exhausted {
            self.refill().await?;
        }
        Ok(self.window.pop())
    }

    async fn refill(&mut self) -> std::io::Result<()> {
        let mut keyed = Vec::with_capacity(WINDOW);
        while keyed.len() < WINDOW {
            let raw = match self.lines.next().await? {
                Read::End => {
                    self.exhausted = true;
                    break;
                }
                // Validation refused such files; one here is not a request.
                Read::TooLong => continue,
                Read::Line(line) if is_blank(line) => continue,
                Read::Line(line) => line.to_vec(),
            };
            let index = self.next_index;
            self.next_index += 1;
            if self.recorded.get(index as usize).copied().unwrap_or(false) {
                continue;
            }
            keyed.push((
                prefix_key(&raw),
                Pending {
                    index,
                    raw,
                    started: 0,
                },
            ));
        }
        // Stable: lines with one prefix keep their file order.
        keyed.sort_by_key(|(key, _)| *key);
        self.window = keyed
            .into_iter()
            .rev()
            .map(|(_, pending)| pending)
            .collect();
        Ok(())
    }

    fn done(&self) -> bool {
        self.exhausted && self.window.is_empty()
    }
}

/// A hash of what a provider's prompt cache keys on: the first message (the
/// system prompt), else `instructions`, else the start of `input`.
pub fn prefix_key(raw: &[u8]) -> u64 {
    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        body: Head<'a>,
    }
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        messages: Option<Vec<&'a RawValue>>,
        #[serde(borrow, default)]
        instructions: Option<&'a RawValue>,
        #[serde(borrow, default)]
        input: Option<&'a RawValue>,
    }
    let Ok(line) = serde_json::from_slice::<Line<'_>>(raw) else {
        return 0;
    };
    let head = line.body;
    let text = head
        .messages
        .as_ref()
        .and_then(|messages| messages.first())
        .or(head.instructions.as_ref())
        .map(|raw| raw.get())
        .or_else(|| {
            head.input
                .map(|input| &input.get()[..input.get().len().min(512)])
        })
        .unwrap_or("");
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// What became of a line once its answer is in (and recorded).
enum Settled {
    Recorded { failed: bool, pressed: bool },
    Retry { after: Duration },
    Pause,
}

/// Lines in flight and how many may be: an AIMD limit. It grows by one per
/// window of `limit` smooth answers (about one round trip) and shrinks by a
/// quarter when the upstream pushes back (a 429, an overload, a retried
/// call). Push-back from a line started before the last cut is ignored: it
/// tells of the old limit, and one overshoot's 429s (some arriving a retry
/// later) then count once. A quarter, not a half: the limit stays within
/// 75–100% of what the upstream takes instead of halving at every probe.
struct Flight {
    running: FuturesUnordered<BoxFuture<'static, (Pending, Result<Settled, JobsError>)>>,
    /// Lines waiting for their answer: the limit counts these, not the ones
    /// being recorded, so a slow store does not leave upstream quota idle.
    answering: Arc<std::sync::atomic::AtomicUsize>,
    /// Told when a line's answer is in, so the next line starts while the
    /// answered one is still being recorded.
    freed: Arc<tokio::sync::Notify>,
    limit: usize,
    max: usize,
    successes: usize,
    /// Lines started so far: each line's `started` is its number.
    starts: u64,
    /// Lines started before this number ran under a limit since cut.
    cut_before: u64,
    /// `sluice_batch_line_limit`, which holds this batch's share.
    gauge: prometheus::IntGauge,
    /// No line starts before this: the wait the last push-back asked for.
    quiet_until: Option<Instant>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.gauge.sub(self.limit as i64);
    }
}

impl Flight {
    fn answering(&self) -> usize {
        self.answering.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn new(max: usize, gauge: prometheus::IntGauge) -> Self {
        let limit = START_LIMIT.min(max);
        gauge.add(limit as i64);
        Self {
            gauge,
            running: FuturesUnordered::new(),
            answering: Arc::default(),
            freed: Arc::default(),
            limit,
            max,
            successes: 0,
            starts: 0,
            cut_before: 0,
            quiet_until: None,
        }
    }

    /// Numbers a line as it starts.
    fn start(&mut self, pending: &mut Pending) {
        pending.started = self.starts;
        self.starts += 1;
    }

    fn succeeded(&mut self) {
        self.successes += 1;
        if self.successes >= self.limit {
            self.successes = 0;
            self.set_limit((self.limit + 1).min(self.max));
        }
    }

    /// Push-back seen by a line started as number `started`, with the wait
    /// the upstream (or the gateway) asked for.
    fn told_to_wait(&mut self, started: u64, wait: Duration) {
        let now = Instant::now();
        if started < self.cut_before || self.quiet_until.is_some_and(|until| now < until) {
            return;
        }
        // Lines started while the deployment is throttled would only be
        // refused at once (and look like more push-back): none start until
        // the wait is over.
        self.quiet_until = (!wait.is_zero()).then(|| now + wait);
        self.cut_before = self.starts;
        self.successes = 0;
        self.set_limit((self.limit * 3 / 4).max(1));
    }

    /// How long a blocked loop sleeps: to the end of a quiet period, or `at_most`.
    fn pause(&self, at_most: Duration) -> Duration {
        self.quiet_until
            .map(|until| until.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
            .map_or(at_most, |left| left.min(at_most))
    }

    fn set_limit(&mut self, limit: usize) {
        self.gauge.add(limit as i64 - self.limit as i64);
        self.limit = limit;
    }
}

pub async fn execute(jobs: &Arc<Jobs>, batch: &Batch, lease: &Lease) -> Result<Step, JobsError> {
    if batch.status == Status::Cancelling {
        // Nothing starts on a cancelled batch, whoever its key is now.
        return close(jobs, batch, lease, Some(End::Cancel)).await;
    }
    let Some(identity) = jobs.identity_of(&batch.owner) else {
        return close_revoked(jobs, batch, lease).await;
    };
    let recorded = recorded_lines(jobs, batch).await?;
    let lines = match Lines::open(&jobs.files.path(&batch.input_file_id)).await {
        Ok(lines) => lines,
        // Deleted while the batch ran: nothing left to read, so it fails
        // rather than being retried at every poll.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            super::lease::fail(
                lease,
                batch,
                "file_not_found",
                "The input file was deleted.",
            )
            .await?;
            return Ok(Step::Again);
        }
        Err(error) => return Err(JobsError::Storage(error)),
    };
    let context = LineContext::new(
        &batch.id,
        &batch.endpoint,
        identity,
        jobs.batch.discount,
        jobs.internal.clone(),
        batch
            .trace_parent
            .as_deref()
            .and_then(|parent| http::HeaderValue::from_str(parent).ok()),
    );
    let mut source = Source {
        lines,
        next_index: 0,
        recorded,
        window: Vec::new(),
        exhausted: false,
    };
    let end = if unix_now() >= batch.expires_at {
        // Claimed after its window (paused, or no replica was up): no line
        // starts.
        Some(End::Expire)
    } else {
        send_lines(jobs, batch, lease, context, &mut source).await?
    };
    match end {
        Some(End::Leave) => Ok(Step::Stop),
        Some(End::Pause) => {
            tracing::info!(batch = %batch.id, "batch paused: the key's budget is spent");
            lease
                .transition(
                    Status::InProgress,
                    "paused_until = $1",
                    vec![(unix_now() + jobs.batch.budget_pause.as_secs() as i64).into()],
                )
                .await?;
            Ok(Step::Stop)
        }
        Some(End::Revoked) => close_revoked(jobs, batch, lease).await,
        Some(End::Expire) => {
            let recorded = recorded_lines(jobs, batch).await?;
            finalize::record_rest(
                jobs,
                batch,
                lease,
                &recorded,
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            )
            .await?;
            close(jobs, batch, lease, Some(End::Expire)).await
        }
        end => close(jobs, batch, lease, end).await,
    }
}

/// Records every line not yet recorded as `key_revoked`, and closes the batch.
async fn close_revoked(jobs: &Arc<Jobs>, batch: &Batch, lease: &Lease) -> Result<Step, JobsError> {
    let recorded = recorded_lines(jobs, batch).await?;
    finalize::record_rest(
        jobs,
        batch,
        lease,
        &recorded,
        "key_revoked",
        "The key that made this batch no longer exists.",
    )
    .await?;
    close(jobs, batch, lease, None).await
}

/// Closes a batch whose lines are all recorded (or cancelled).
async fn close(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    end: Option<End>,
) -> Result<Step, JobsError> {
    let target = match end {
        Some(End::Cancel) => Status::Cancelled,
        Some(End::Expire) => Status::Expired,
        _ => {
            let moved = lease
                .transition(
                    Status::InProgress,
                    "status = 'finalizing', finalizing_at = $1",
                    vec![unix_now().into()],
                )
                .await?;
            if !moved {
                return Ok(Step::Again);
            }
            let mut finalizing = batch.clone();
            finalizing.status = Status::Finalizing;
            finalize::close(jobs, &finalizing, lease, Status::Completed).await?;
            return Ok(Step::Again);
        }
    };
    finalize::close(jobs, batch, lease, target).await?;
    Ok(Step::Again)
}

/// Sends lines until every one is recorded or the run must end.
async fn send_lines(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    context: LineContext,
    source: &mut Source,
) -> Result<Option<End>, JobsError> {
    let mut context = Arc::new(context);
    let mut flight = Flight::new(
        jobs.batch.max_concurrency,
        jobs.metrics.batch_line_limit.clone(),
    );
    let mut retries: VecDeque<(Instant, Pending)> = VecDeque::new();
    let mut heartbeat = tokio::time::interval(jobs.batch.lease / 3);
    let mut end = None;
    let mut key = KeyWatch {
        missing_since: None,
        grace: jobs.batch.lease,
    };
    loop {
        let may_start = key.follow(jobs, batch, &mut context, &mut end);
        let blocked = end.is_none()
            && may_start
            && fill(jobs, &context, source, &mut retries, &mut flight)
                .await
                .map_err(JobsError::Storage)?;
        if flight.running.is_empty() && (end.is_some() || (source.done() && retries.is_empty())) {
            return Ok(end);
        }
        let next_retry = retries.front().map(|(at, _)| *at);
        let pause = flight.pause(Duration::from_millis(50));
        tokio::select! {
            Some((pending, settled)) = flight.running.next(), if !flight.running.is_empty() => {
                match settled? {
                    Settled::Recorded { failed, pressed } => {
                        let result = if failed { "failed" } else { "completed" };
                        jobs.metrics.batch_lines.with_label_values(&[result]).inc();
                        if pressed {
                            flight.told_to_wait(pending.started, Duration::ZERO);
                        } else {
                            flight.succeeded();
                        }
                    }
                    Settled::Retry { after } => {
                        jobs.metrics.batch_lines.with_label_values(&["retried"]).inc();
                        flight.told_to_wait(pending.started, after);
                        retries.push_back((Instant::now() + after, pending));
                        retries.make_contiguous().sort_by_key(|(at, _)| *at);
                    }
                    Settled::Pause => end = end.or(Some(End::Pause)),
                }
            }
            _ = heartbeat.tick() => {
                if let Some(stop) = check_in(lease, batch).await? {
                    if stop == End::Leave {
                        return Ok(Some(End::Leave));
                    }
                    end = end.or(Some(stop));
                }
            }
            () = sleep_until(next_retry), if next_retry.is_some() && end.is_none() => {}
            () = flight.freed.notified(), if end.is_none() => {}
            () = tokio::time::sleep(pause), if blocked => {}
            () = jobs.tasks.stopping() => return Ok(Some(End::Leave)),
        }
    }
}

/// Follows the batch's key through a run. A change (limits, allow-list,
/// budget) applies to the lines started after it. A key gone from the
/// config in force starts no lines, and once it has been gone for `grace`
/// (one lease) the run ends as revoked: a reload that drops a key for a
/// moment (an edit undone, a runtime key left out) does not end its batches.
struct KeyWatch {
    missing_since: Option<Instant>,
    grace: Duration,
}

impl KeyWatch {
    /// Whether lines may start now; sets `end` once the key is gone for good.
    fn follow(
        &mut self,
        jobs: &Jobs,
        batch: &Batch,
        context: &mut Arc<LineContext>,
        end: &mut Option<End>,
    ) -> bool {
        let Some(key) = jobs.identity_of(&batch.owner) else {
            let since = *self.missing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.grace {
                *end = end.or(Some(End::Revoked));
            }
            return false;
        };
        self.missing_since = None;
        if !Arc::ptr_eq(&key, &context.key) {
            *context = Arc::new(context.for_key(key));
        }
        true
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Starts lines while the limit and this replica's permits allow; `true`
/// when lines wait for a permit another batch holds, or for realtime calls
/// queued for a slot to go first.
async fn fill(
    jobs: &Arc<Jobs>,
    context: &Arc<LineContext>,
    source: &mut Source,
    retries: &mut VecDeque<(Instant, Pending)>,
    flight: &mut Flight,
) -> std::io::Result<bool> {
    // Lines being recorded are bounded too, by the limit's ceiling.
    while flight.answering() < flight.limit && flight.running.len() < 2 * flight.max {
        let now = Instant::now();
        if jobs.internal.busier_work_waiting() {
            // Realtime calls queue for a slot: send no more, and come back
            // with a smaller limit.
            // As pushed back by the last line started: once per episode.
            flight.told_to_wait(flight.starts.saturating_sub(1), Duration::ZERO);
            return Ok(true);
        }
        if flight.quiet_until.is_some_and(|until| now < until) {
            return Ok(true);
        }
        let Ok(permit) = jobs.line_permits.clone().try_acquire_owned() else {
            return Ok(true);
        };
        let pending = match retries.front() {
            Some((at, _)) if *at <= now => retries.pop_front().map(|(_, pending)| pending),
            // As many lines wait to be retried as may be in flight: no new
            // ones are read until they went, so held lines stay bounded.
            Some(_) if retries.len() >= flight.max => return Ok(false),
            _ => source.next().await?,
        };
        let Some(mut pending) = pending else {
            return Ok(false);
        };
        flight.start(&mut pending);
        let context = context.clone();
        let jobs = jobs.clone();
        let in_flight = InFlight::start(&jobs.metrics, flight);
        flight.running.push(Box::pin(async move {
            let outcome = line::run(&context, &pending.raw).await;
            drop((permit, in_flight));
            // Recorded here, beside the other lines in flight, rather than
            // one at a time by the loop that starts them.
            let settled = settle(&jobs, &context.batch_id, pending.index, outcome).await;
            (pending, settled)
        }));
    }
    Ok(false)
}

async fn settle(
    jobs: &Jobs,
    batch_id: &str,
    index: i64,
    outcome: Outcome,
) -> Result<Settled, JobsError> {
    Ok(match outcome {
        Outcome::Done {
            failed,
            output,
            usage,
            pressed,
        } => {
            record(jobs, batch_id, index, failed, &output, usage).await?;
            Settled::Recorded { failed, pressed }
        }
        Outcome::Retry { after } => Settled::Retry { after },
        Outcome::Pause => Settled::Pause,
    })
}

/// One line counted in `sluice_batch_lines_in_flight` and in its batch's
/// lines waiting for an answer until dropped (answered, or abandoned at
/// shutdown).
struct InFlight {
    metrics: crate::infra::metrics::Metrics,
    answering: Arc<std::sync::atomic::AtomicUsize>,
    freed: Arc<tokio::sync::Notify>,
}

impl InFlight {
    fn start(metrics: &crate::infra::metrics::Metrics, flight: &Flight) -> Self {
        metrics.batch_lines_in_flight.inc();
        flight
            .answering
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            metrics: metrics.clone(),
            answering: flight.answering.clone(),
            freed: flight.freed.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.batch_lines_in_flight.dec();
        self.answering
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.freed.notify_one();
    }
}

/// Renews the lease and reads whether the batch was cancelled or expired.
async fn check_in(lease: &Lease, batch: &Batch) -> Result<Option<End>, JobsError> {
    if !lease.renew().await? {
        tracing::warn!(batch = %batch.id, "batch lease taken by another replica; leaving it");
        return Ok(Some(End::Leave));
    }
    // The stored row, not the copy claimed at the start of the run: the
    // store is the one truth (an operator may move `expires_at`), and a run
    // can last long after its claim.
    let Some(stored) = super::record::load(&lease.jobs.db, &batch.id).await? else {
        return Ok(Some(End::Leave));
    };
    if unix_now() >= stored.expires_at {
        return Ok(Some(End::Expire));
    }
    Ok((stored.status == Status::Cancelling).then_some(End::Cancel))
}

/// Which lines are recorded already, by request number.
async fn recorded_lines(jobs: &Jobs, batch: &Batch) -> Result<Vec<bool>, JobsError> {
    let mut recorded = vec![false; batch.total.max(0) as usize];
    let rows = jobs
        .db
        .query(
            "SELECT line FROM sluice_batch_results WHERE batch_id = $1",
            vec![batch.id.as_str().into()],
        )
        .await?;
    for row in rows {
        if let Some(line) = row.first().and_then(|value| value.int())
            && let Some(slot) = recorded.get_mut(line as usize)
        {
            *slot = true;
        }
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(flight: &mut Flight) -> u64 {
        let mut pending = Pending {
            index: 0,
            raw: Vec::new(),
            started: 0,
        };
        flight.start(&mut pending);
        pending.started
    }

    #[test]
    fn one_overshoot_cuts_the_limit_once_and_smooth_windows_grow_it() {
        let gauge = prometheus::IntGauge::new("limit", "limit").unwrap();
        let mut flight = Flight::new(64, gauge.clone());
        assert_eq!(flight.limit, START_LIMIT);
        for _ in 0..START_LIMIT {
            flight.succeeded();
        }
        assert_eq!(flight.limit, START_LIMIT + 1);
        let early: Vec<u64> = (0..9).map(|_| started(&mut flight)).collect();
        // Every line of the overshoot is told to wait: one cut.
        for line in &early {
            flight.told_to_wait(*line, Duration::ZERO);
        }
        assert_eq!(flight.limit, 6);
        // A line started under the cut limit that is pushed back cuts again.
        let late = started(&mut flight);
        flight.told_to_wait(late, Duration::ZERO);
        assert_eq!(flight.limit, 4);
        assert_eq!(gauge.get(), 4);
        drop(flight);
        assert_eq!(gauge.get(), 0);
        let mut one = Flight::new(1, gauge);
        let line = started(&mut one);
        one.told_to_wait(line, Duration::ZERO);
        assert_eq!(one.limit, 1, "never below one");
    }
}
