//! The usage ledger: one record per request, written asynchronously in
//! batches. The request path only `try_send`s into a bounded channel; a
//! writer task batches by size or interval, holds records while the store
//! is down (bounded; overflow is counted and logged), and drains everything
//! on shutdown.

mod layer;
mod record;
mod store;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::UsageConfig;
use crate::metrics::Metrics;
use crate::telemetry::LogEvery;

pub use layer::{Estimates, RecordUsage};
pub use record::{Total, UsageRecord};
pub use store::{Store, StoreError};

pub struct Ledger {
    sender: mpsc::Sender<UsageRecord>,
    /// Wakes the writer when a batch is waiting; otherwise it wakes on its
    /// interval only, not once per record.
    batch_ready: Arc<Notify>,
    batch_size: usize,
    store: Arc<Store>,
    metrics: Metrics,
    drop_log: LogEvery,
    /// Tells the writer to drain and stop; answered when it has.
    stop: tokio::sync::Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl Ledger {
    /// `None` with `store = "none"`.
    pub fn start(config: &UsageConfig, metrics: Metrics) -> Result<Option<Arc<Self>>, String> {
        if config.store == "none" {
            return Ok(None);
        }
        let store =
            Arc::new(Store::open(&config.store, &config.data_dir).map_err(|e| e.to_string())?);
        Ok(Some(Self::with_store(store, config, metrics)))
    }

    pub fn with_store(store: Arc<Store>, config: &UsageConfig, metrics: Metrics) -> Arc<Self> {
        let (sender, receiver) = mpsc::channel(config.buffer.max(1));
        let batch_ready = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let writer = Writer {
            store: store.clone(),
            receiver,
            pending: VecDeque::new(),
            batch_size: config.batch_size.max(1),
            buffer: config.buffer.max(1),
            metrics: metrics.clone(),
            error_log: LogEvery::store_failures(),
            batch_ready: batch_ready.clone(),
        };
        tokio::spawn(writer.run(config.flush_interval, stop_rx, done_tx));
        Arc::new(Self {
            sender,
            batch_ready,
            batch_size: config.batch_size.max(1),
            store,
            metrics,
            drop_log: LogEvery::store_failures(),
            stop: tokio::sync::Mutex::new(Some((stop_tx, done_rx))),
        })
    }

    /// Queues a record; never waits. A full channel drops it (counted).
    pub fn record(&self, record: UsageRecord) {
        if self.sender.try_send(record).is_ok() {
            let queued = self.sender.max_capacity() - self.sender.capacity();
            if queued >= self.batch_size {
                self.batch_ready.notify_one();
            }
        } else {
            self.metrics.ledger_dropped.inc();
            if self.drop_log.due() {
                tracing::error!(
                    "usage ledger buffer full: records are being dropped (see sluice_ledger_dropped_total)"
                );
            }
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes everything still pending, waiting at most `within`.
    pub async fn flush(&self, within: Duration) {
        let Some((stop, done)) = self.stop.lock().await.take() else {
            return;
        };
        let _ = stop.send(());
        if tokio::time::timeout(within, done).await.is_err() {
            tracing::error!(
                "usage ledger could not flush within {within:?}; unwritten records are lost"
            );
        }
    }
}

struct Writer {
    store: Arc<Store>,
    receiver: mpsc::Receiver<UsageRecord>,
    /// Received but not yet written (the store may be down).
    pending: VecDeque<UsageRecord>,
    batch_size: usize,
    buffer: usize,
    metrics: Metrics,
    error_log: LogEvery,
    batch_ready: Arc<Notify>,
}

impl Writer {
    async fn run(
        mut self,
        interval: Duration,
        mut stop: oneshot::Receiver<()>,
        done: oneshot::Sender<()>,
    ) {
        // Migrate at start-up; a store that is down is retried by the writes.
        if let Err(error) = self.store.prepare().await {
            tracing::warn!(%error, "usage store not reachable at start-up; records wait in the buffer");
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The writer never waits on the channel itself: a receiver parked
        // there would be woken by every record, a cross-thread wake-up per
        // request. It wakes per interval or per full batch instead.
        loop {
            let interval_passed = tokio::select! {
                _ = ticks.tick() => true,
                () = self.batch_ready.notified() => false,
                _ = &mut stop => break,
            };
            self.take_queued();
            if interval_passed || self.pending.len() >= self.batch_size {
                self.write_all().await;
            }
        }
        self.take_queued();
        for _ in 0..3 {
            if self.write_all().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = done.send(());
    }

    fn take_queued(&mut self) {
        while let Ok(record) = self.receiver.try_recv() {
            self.hold(record);
        }
        self.metrics.ledger_pending.set(self.pending.len() as i64);
    }

    fn hold(&mut self, record: UsageRecord) {
        if self.pending.len() >= self.buffer {
            self.pending.pop_front();
            self.metrics.ledger_dropped.inc();
        }
        self.pending.push_back(record);
    }

    /// Writes pending records in batches; `true` when none are left.
    async fn write_all(&mut self) -> bool {
        while !self.pending.is_empty() {
            let take = self.pending.len().min(self.batch_size);
            let batch = Arc::new(self.pending.drain(..take).collect::<Vec<_>>());
            match self.store.write(batch.clone()).await {
                Ok(()) => {
                    self.metrics.ledger_written.inc_by(take as u64);
                    if let Some(oldest) = batch.first() {
                        let lag_ms = crate::metering::unix_ms().saturating_sub(oldest.at_ms);
                        self.metrics.ledger_lag.set(lag_ms as f64 / 1000.0);
                    }
                }
                Err(error) => {
                    // Back to the front, in order, for the next attempt.
                    let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
                    for record in batch.into_iter().rev() {
                        self.pending.push_front(record);
                    }
                    self.metrics.ledger_store_errors.inc();
                    self.metrics.ledger_pending.set(self.pending.len() as i64);
                    if self.error_log.due() {
                        tracing::error!(%error, pending = self.pending.len(), "usage ledger write failed; holding records and retrying");
                    }
                    return false;
                }
            }
        }
        self.metrics.ledger_pending.set(0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::store::flaky::Flaky;
    use super::*;
    use std::sync::atomic::Ordering;

    fn record(n: i64) -> UsageRecord {
        UsageRecord {
            at_ms: n,
            request_id: format!("req-{n}"),
            key: "k".into(),
            org: None,
            model_requested: "m".into(),
            model: "m".into(),
            deployment: Some("d".into()),
            priority: "standard",
            cache: "-",
            tag: None,
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
        UsageConfig {
            store: "test".into(),
            data_dir: String::new(),
            batch_size: 10,
            flush_interval: Duration::from_millis(10),
            buffer,
        }
    }

    #[tokio::test]
    async fn an_outage_loses_nothing_within_the_buffer_and_counts_overflow() {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let metrics = Metrics::new().unwrap();
        let ledger = Ledger::with_store(
            Arc::new(Store::Flaky(flaky.clone())),
            &config(100),
            metrics.clone(),
        );
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

        // Past the buffer while down, the oldest go first, and are counted.
        flaky.down.store(true, Ordering::SeqCst);
        let small = Ledger::with_store(
            Arc::new(Store::Flaky(flaky.clone())),
            &config(20),
            metrics.clone(),
        );
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
    }
}
