//! The writer task: takes journaled records from the hand-off, writes them
//! to the store in batches (by size or interval) and, after each commit,
//! publishes how far the journal is committed. While the store is down it
//! holds records and retries; they are in the journal meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::intake::Handoff;
use super::{Store, UsageRecord};
use crate::infra::metrics::Metrics;
use crate::infra::telemetry::LogEvery;

/// Longest one write may take before it counts as failed and is retried. A
/// write that commits after its deadline is harmless: the retry adds no
/// rows, the record ids being unique.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `sluice_ledger_lag_seconds` and `sluice_ledger_pending` are
/// brought up to date at most.
const REFRESH: Duration = Duration::from_secs(1);

pub struct Writer {
    pub store: Arc<Store>,
    pub handoff: Arc<Handoff>,
    pub committed: Arc<AtomicU64>,
    pub batch_size: usize,
    pub metrics: Metrics,
}

impl Writer {
    pub async fn run(
        self,
        interval: Duration,
        mut stop: oneshot::Receiver<()>,
        done: oneshot::Sender<()>,
    ) {
        let mut state = State {
            writer: self,
            pending: VecDeque::new(),
            error_log: LogEvery::store_failures(),
        };
        // Migrate at start-up; a store that is down is retried by the writes.
        match tokio::time::timeout(WRITE_TIMEOUT, state.writer.store.prepare()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "usage store not reachable at start-up; records wait in the journal");
            }
            Err(_) => tracing::warn!(
                "usage store did not answer at start-up; records wait in the journal"
            ),
        }
        // The first tick is at once: records replayed from the journal are
        // written at start-up, not an interval later.
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With a long flush interval the gauges are still refreshed each second.
        let mut refresh = tokio::time::interval(REFRESH.min(interval));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let interval_passed = tokio::select! {
                _ = ticks.tick() => true,
                () = state.writer.handoff.ready.notified() => false,
                _ = refresh.tick() => false,
                _ = &mut stop => break,
            };
            state.take();
            if interval_passed || state.pending.len() >= state.writer.batch_size {
                state.write_all().await;
            }
            state.show_held();
        }
        state.take();
        for _ in 0..3 {
            if state.write_all().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        state.show_held();
        let _ = done.send(());
    }
}

struct State {
    writer: Writer,
    /// Taken from the hand-off, not yet written, oldest first.
    pending: VecDeque<UsageRecord>,
    error_log: LogEvery,
}

impl State {
    fn take(&mut self) {
        self.writer.handoff.take_into(&mut self.pending);
    }

    /// How many records are held and the age of the oldest: it grows while
    /// nothing is written.
    fn show_held(&self) {
        let metrics = &self.writer.metrics;
        metrics.ledger_pending.set(self.pending.len() as i64);
        let lag_ms = self.pending.front().map_or(0, |oldest| {
            crate::engines::metering::unix_ms().saturating_sub(oldest.at_ms)
        });
        metrics.ledger_lag.set(lag_ms as f64 / 1000.0);
    }

    /// Writes pending records in batches; `true` when none are left.
    async fn write_all(&mut self) -> bool {
        let writer = &self.writer;
        while !self.pending.is_empty() {
            let take = self.pending.len().min(writer.batch_size);
            let batch = Arc::new(self.pending.drain(..take).collect::<Vec<_>>());
            let written = tokio::time::timeout(WRITE_TIMEOUT, writer.store.write(batch.clone()))
                .await
                .unwrap_or_else(|_| Err(super::StoreError::Unavailable("write timed out".into())));
            match written {
                Ok(inserted) => {
                    // Rows a replay finds already stored are not counted again.
                    writer.metrics.ledger_written.inc_by(inserted);
                    // Batches commit in journal order, so the count is the seq.
                    writer.committed.fetch_add(take as u64, Ordering::Release);
                }
                Err(error) => {
                    // Back to the front, in order, for the next attempt.
                    let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| (*shared).clone());
                    for record in batch.into_iter().rev() {
                        self.pending.push_front(record);
                    }
                    writer.metrics.ledger_store_errors.inc();
                    if self.error_log.due() {
                        tracing::error!(%error, pending = self.pending.len(), "usage ledger write failed; holding records (they are in the journal) and retrying");
                    }
                    return false;
                }
            }
        }
        true
    }
}
