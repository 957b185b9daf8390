//! The usage ledger: one record per request, journaled locally within
//! milliseconds and written to the store in batches. The request path only
//! `try_send`s into a bounded channel; the journal thread (`intake`) appends
//! each record to a local file and hands it to the writer task, which
//! batches by size or interval and holds records while the store is down.
//! A crash or a shutdown during an outage loses nothing: the next start
//! replays the journal, and the store skips rows it already has.

mod intake;
mod journal;
mod line;
mod record;
mod store;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use self::intake::{Handoff, Intake};
use self::journal::Journal;
use self::writer::Writer;
use crate::config::UsageConfig;
use crate::infra::metrics::Metrics;
use crate::infra::telemetry::LogEvery;
use crate::util::tasks::Tasks;

pub use intake::JOURNAL_THREAD;
pub use record::{Total, UsageRecord, cache_status};
pub use store::{Store, StoreError};

pub struct Ledger {
    sender: mpsc::Sender<UsageRecord>,
    intake: Intake,
    store: Arc<Store>,
    metrics: Metrics,
    drop_log: LogEvery,
    /// Records still being made off the request path (a token count on the
    /// blocking pool): shutdown waits for them before the journal's last
    /// step, so a call answered just before SIGTERM is not lost.
    promised: TaskTracker,
    /// Tells the writer to drain and stop, answered when it has; the task,
    /// to end it if it has not within the shutdown deadline.
    stop: tokio::sync::Mutex<Option<Stop>>,
}

/// Held while a record is being made; see `Ledger::promise`.
pub struct Promise(#[expect(dead_code, reason = "held for its drop")] TaskTrackerToken);

struct Stop {
    tell: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

impl Ledger {
    /// `None` with `store = "none"`.
    pub fn start(
        config: &UsageConfig,
        metrics: Metrics,
        tasks: &Tasks,
    ) -> Result<Option<Arc<Self>>, String> {
        if config.store == "none" {
            return Ok(None);
        }
        let store =
            Store::open(&config.store, &config.data_dir, tasks).map_err(|e| e.to_string())?;
        Self::with_store(Arc::new(store), config, metrics, tasks).map(Some)
    }

    /// Opens the journal in `data_dir`, replaying what an earlier run left
    /// there, and starts the journal thread and the writer.
    pub fn with_store(
        store: Arc<Store>,
        config: &UsageConfig,
        metrics: Metrics,
        tasks: &Tasks,
    ) -> Result<Arc<Self>, String> {
        let dir = Path::new(&config.data_dir);
        let (journal, replay) = Journal::open(dir, config.flush_interval)
            .map_err(|e| format!("cannot open the journal in `{}`: {e}", dir.display()))?;
        if !replay.records.is_empty() || replay.torn > 0 {
            tracing::info!(
                replayed = replay.records.len(),
                torn_lines = replay.torn,
                "usage records of an earlier run replayed from the journal"
            );
        }
        let (sender, receiver) = mpsc::channel(config.buffer.max(1));
        let batch_size = config.batch_size.max(1);
        let handoff = Arc::new(Handoff::new(replay.records, batch_size));
        let committed = Arc::new(AtomicU64::new(0));
        let intake = Intake::start(
            intake::Parts {
                receiver,
                journal,
                handoff: handoff.clone(),
                committed: committed.clone(),
                buffer: config.buffer.max(1),
                metrics: metrics.clone(),
            },
            config.journal_interval,
        )
        .map_err(|e| format!("cannot start the journal thread: {e}"))?;
        let writer = Writer {
            store: store.clone(),
            handoff,
            committed,
            batch_size,
            metrics: metrics.clone(),
        };
        let (tell, stop_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let task = tasks.spawn(writer.run(config.flush_interval, stop_rx, done_tx));
        Ok(Arc::new(Self {
            sender,
            intake,
            store,
            metrics,
            drop_log: LogEvery::store_failures(),
            promised: TaskTracker::new(),
            stop: tokio::sync::Mutex::new(Some(Stop { tell, done, task })),
        }))
    }

    /// Queues a record; never waits. A full channel drops it (counted).
    pub fn record(&self, record: UsageRecord) {
        if self.sender.try_send(record).is_ok() {
            self.intake.nudge();
        } else {
            self.metrics.ledger_dropped.inc();
            if self.drop_log.due() {
                tracing::error!(
                    "usage ledger queue full: records are being dropped (see sluice_ledger_dropped_total)"
                );
            }
        }
    }

    /// A record to come: hold it until `record` is called for it.
    pub fn promise(&self) -> Promise {
        Promise(self.promised.token())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// At shutdown: journals everything queued, writes what the store takes
    /// within `within`, and leaves the rest in the journal for the next start.
    pub async fn flush(&self, within: Duration) {
        let Some(stop) = self.stop.lock().await.take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + within;
        // Time kept for the journal's last step after the writer's.
        let reserve = (within / 4).min(Duration::from_secs(1));
        self.promised.close();
        if tokio::time::timeout_at(deadline - reserve * 2, self.promised.wait())
            .await
            .is_err()
        {
            tracing::warn!("usage records still being counted at shutdown are not written");
        }
        let _ = tokio::time::timeout_at(deadline - reserve, self.intake.drain()).await;
        let _ = stop.tell.send(());
        if tokio::time::timeout_at(deadline - reserve, stop.done)
            .await
            .is_err()
        {
            stop.task.abort();
            tracing::error!("usage store did not take the held records within {within:?}");
        }
        let left = tokio::time::timeout_at(deadline, self.intake.finish()).await;
        let dropped = self.metrics.ledger_dropped.get();
        match left {
            Ok(Some(0)) => tracing::info!(dropped, "usage ledger flushed; the journal is empty"),
            Ok(Some(left)) => tracing::warn!(
                left,
                dropped,
                "usage records left in the journal, not yet in the store; the next start writes them"
            ),
            _ => tracing::error!(
                dropped,
                "usage journal did not stop within {within:?}; what it holds is written at the next start"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::store::flaky::Flaky;
    use super::*;
    use std::sync::atomic::Ordering;

    fn record(n: i64) -> UsageRecord {
        UsageRecord {
            id: String::new(),
            at_ms: n,
            request_id: format!("req-{n}"),
            upstream_request_id: None,
            trace_id: None,
            key: "k".into(),
            key_id: "k".into(),
            org: None,
            model_requested: "m".into(),
            model: "m".into(),
            deployment: Some("d".into()),
            priority: "standard",
            cache: "-",
            tag: None,
            api: crate::vocab::Api::OpenAi,
            prompt_tokens: 1,
            completion_tokens: 1,
            cached_tokens: 0,
            cost_usd: 0.0,
            latency_ms: 1,
            status: 200,
            estimated: false,
        }
    }

    fn config(buffer: usize) -> UsageConfig {
        let dir = std::env::temp_dir().join(format!("sluice-ledger-unit-{}", fastrand::u64(..)));
        UsageConfig {
            store: "test".into(),
            data_dir: dir.display().to_string(),
            batch_size: 10,
            flush_interval: Duration::from_millis(10),
            journal_interval: Duration::from_millis(2),
            buffer,
        }
    }

    /// A ledger on the flaky test store.
    fn flaky_ledger(
        flaky: &Arc<Flaky>,
        config: &UsageConfig,
        metrics: &Metrics,
        tasks: &Tasks,
    ) -> Arc<Ledger> {
        Ledger::with_store(
            Arc::new(Store::Flaky(flaky.clone())),
            config,
            metrics.clone(),
            tasks,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn an_outage_loses_nothing_within_the_buffer_and_counts_overflow() {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let metrics = Metrics::new().unwrap();
        let (roomy, small_config) = (config(100), config(20));
        let ledger = flaky_ledger(&flaky, &roomy, &metrics, &Tasks::new());
        for n in 0..60 {
            ledger.record(record(n));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(flaky.written.lock().unwrap().is_empty());
        assert!(
            metrics.ledger_store_errors.get() > 0,
            "failures are counted"
        );
        assert_eq!(metrics.ledger_pending.get(), 60, "held records are shown");

        flaky.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let written: Vec<i64> = flaky
            .written
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.at_ms)
            .collect();
        assert_eq!(
            written,
            (0..60).collect::<Vec<_>>(),
            "everything, in order, once"
        );
        assert_eq!(metrics.ledger_pending.get(), 0);
        assert_eq!(metrics.ledger_dropped.get(), 0);

        // Past the buffer while down, the newest are refused, and counted.
        flaky.down.store(true, Ordering::SeqCst);
        let small = flaky_ledger(&flaky, &small_config, &metrics, &Tasks::new());
        for n in 100..150 {
            small.record(record(n));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        flaky.down.store(false, Ordering::SeqCst);
        small.flush(Duration::from_secs(5)).await;
        let kept = flaky.written.lock().unwrap().len() - 60;
        let dropped = metrics.ledger_dropped.get() as usize;
        assert_eq!(
            kept + dropped,
            50,
            "each record is either written or counted as dropped"
        );
        assert!(dropped > 0 && kept >= 20, "kept {kept}, dropped {dropped}");
        ledger.flush(Duration::from_secs(5)).await;
        for dir in [roomy.data_dir, small_config.data_dir] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[tokio::test]
    async fn the_lag_is_the_age_of_the_oldest_held_record() {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let metrics = Metrics::new().unwrap();
        let config = config(100);
        let ledger = flaky_ledger(&flaky, &config, &metrics, &Tasks::new());
        let now = crate::engines::metering::unix_ms();
        ledger.record(record(now - 5_000));
        ledger.record(record(now - 1_000));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lag = metrics.ledger_lag.get();
        assert!((5.0..6.0).contains(&lag), "lag {lag}");

        flaky.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(metrics.ledger_lag.get(), 0.0, "nothing held");
        ledger.flush(Duration::from_secs(5)).await;
        let _ = std::fs::remove_dir_all(&config.data_dir);
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_promised_record() {
        let flaky = Arc::new(Flaky::default());
        let config = config(100);
        let tasks = Tasks::new();
        let ledger = flaky_ledger(&flaky, &config, &Metrics::new().unwrap(), &tasks);
        // A record still being counted when shutdown begins.
        let promise = ledger.promise();
        let later = ledger.clone();
        let counting = tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            later.record(record(7));
            drop(promise);
        });
        ledger.flush(Duration::from_secs(5)).await;
        counting.await.unwrap();
        let written: Vec<i64> = flaky
            .written
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.at_ms)
            .collect();
        assert_eq!(written, vec![7], "the promised record is written, not lost");
        let _ = std::fs::remove_dir_all(&config.data_dir);
    }
}
