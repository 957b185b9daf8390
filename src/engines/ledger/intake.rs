//! The journal thread: every tick (`[usage] journal_interval`, a few
//! milliseconds) it takes what the request path queued, gives each record
//! its id, appends them all to the journal in one `write`, and hands them to
//! the writer. A thread of its own, because file writes block; a tick rather
//! than a wake-up per record, because a wake-up costs the request path a
//! cross-thread signal. With nothing held it parks instead of ticking, and
//! the first record queued wakes it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, mpsc as sync_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::journal::Journal;
use super::{UsageRecord, line};
use crate::infra::metrics::Metrics;
use crate::infra::telemetry::LogEvery;

/// The journal thread's name (Linux shows 15 bytes of it).
pub const JOURNAL_THREAD: &str = "sluice-journal";

/// Journaled records on their way to the writer.
pub struct Handoff {
    queue: Mutex<VecDeque<UsageRecord>>,
    /// Wakes the writer when a batch is waiting; otherwise it wakes on its
    /// interval.
    pub ready: Notify,
    batch_size: usize,
}

impl Handoff {
    pub fn new(replayed: Vec<UsageRecord>, batch_size: usize) -> Self {
        Self {
            queue: Mutex::new(replayed.into()),
            ready: Notify::new(),
            batch_size,
        }
    }

    /// Everything waiting, oldest first, appended to `into`.
    pub fn take_into(&self, into: &mut VecDeque<UsageRecord>) {
        if let Ok(mut queue) = self.queue.lock() {
            into.append(&mut queue);
        }
    }

    fn put(&self, records: &mut Vec<UsageRecord>) {
        let waiting = match self.queue.lock() {
            Ok(mut queue) => {
                queue.extend(records.drain(..));
                queue.len()
            }
            Err(_) => return,
        };
        if waiting >= self.batch_size {
            self.ready.notify_one();
        }
    }
}

enum Command {
    /// A record was queued while the thread was parked.
    Wake,
    /// Take and journal everything queued so far, then answer.
    Drain(oneshot::Sender<()>),
    /// The same, delete what is committed, answer with how many records
    /// are left in the journal, and stop.
    Finish(oneshot::Sender<u64>),
}

pub struct Intake {
    control: sync_mpsc::SyncSender<Command>,
    /// Set by the thread while parked; the request path wakes it.
    parked: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub struct Parts {
    pub receiver: mpsc::Receiver<UsageRecord>,
    pub journal: Journal,
    pub handoff: Arc<Handoff>,
    /// The seq of the last record the writer committed.
    pub committed: Arc<AtomicU64>,
    /// Most records held (journaled, not committed); more are dropped.
    pub buffer: usize,
    pub metrics: Metrics,
}

impl Intake {
    pub fn start(parts: Parts, tick: Duration) -> std::io::Result<Self> {
        let (control, commands) = sync_mpsc::sync_channel(4);
        let parked = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            parked: parked.clone(),
            receiver: parts.receiver,
            journal: parts.journal,
            handoff: parts.handoff,
            committed: parts.committed,
            buffer: parts.buffer as u64,
            metrics: parts.metrics,
            prefix: id_prefix(),
            next_id: 0,
            lines: Vec::new(),
            batch: Vec::new(),
            drop_log: LogEvery::store_failures(),
            error_log: LogEvery::store_failures(),
        };
        let thread = std::thread::Builder::new()
            .name(JOURNAL_THREAD.into())
            .spawn(move || worker.run(&commands, tick))?;
        Ok(Self {
            control,
            parked,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Called after each record is queued: one atomic load unless the
    /// thread is parked. The fence pairs with the thread's: either it sees
    /// the record before parking, or this sees it parked.
    pub fn nudge(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::SeqCst) {
            // A full control channel already holds a command that wakes it.
            let _ = self.control.try_send(Command::Wake);
        }
    }

    /// Returns once everything queued before the call is journaled and
    /// handed to the writer.
    pub async fn drain(&self) {
        let (reply, done) = oneshot::channel();
        if self.control.try_send(Command::Drain(reply)).is_ok() {
            let _ = done.await;
        }
    }

    /// Stops the thread; how many records are left in the journal.
    pub async fn finish(&self) -> Option<u64> {
        let (reply, done) = oneshot::channel();
        self.control.try_send(Command::Finish(reply)).ok()?;
        let left = done.await.ok();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            // It has answered, so it is returning: the join is immediate.
            let _ = join(thread).await;
        }
        left
    }
}

struct Worker {
    receiver: mpsc::Receiver<UsageRecord>,
    parked: Arc<AtomicBool>,
    journal: Journal,
    handoff: Arc<Handoff>,
    committed: Arc<AtomicU64>,
    buffer: u64,
    metrics: Metrics,
    /// Unique to this process: with a counter, each record's id.
    prefix: String,
    next_id: u64,
    /// Reused across ticks: the encoded lines and the records of one tick.
    lines: Vec<u8>,
    batch: Vec<UsageRecord>,
    drop_log: LogEvery,
    error_log: LogEvery,
}

impl Worker {
    fn run(mut self, commands: &sync_mpsc::Receiver<Command>, tick: Duration) {
        loop {
            let command = if self.park() {
                commands
                    .recv()
                    .map_err(|_| sync_mpsc::RecvTimeoutError::Disconnected)
            } else {
                commands.recv_timeout(tick)
            };
            self.parked.store(false, Ordering::SeqCst);
            self.step();
            match command {
                Err(sync_mpsc::RecvTimeoutError::Timeout) | Ok(Command::Wake) => {}
                Ok(Command::Drain(reply)) => {
                    let _ = reply.send(());
                }
                Ok(Command::Finish(reply)) => {
                    let _ = reply.send(self.journal.held(self.committed()));
                    return;
                }
                Err(sync_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Whether to wait for a command without a tick: only with nothing
    /// held (so nothing to rotate or delete) and nothing queued. The record
    /// path's `nudge` wakes it.
    fn park(&self) -> bool {
        if self.journal.held(self.committed()) > 0 {
            return false;
        }
        self.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.receiver.is_empty() {
            return true;
        }
        self.parked.store(false, Ordering::SeqCst);
        false
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    fn step(&mut self) {
        let committed = self.committed();
        self.take(committed);
        if let Err(error) = self.journal.prune(committed) {
            self.journal_failed(&error);
        }
    }

    /// Journals and hands over what is queued, dropping (and counting) what
    /// would hold more than `buffer` records.
    fn take(&mut self, committed: u64) {
        let room = self.buffer.saturating_sub(self.journal.held(committed));
        let mut dropped = 0u64;
        while let Ok(mut record) = self.receiver.try_recv() {
            if self.batch.len() as u64 >= room {
                dropped += 1;
                continue;
            }
            self.next_id += 1;
            record.id = format!("{}-{:x}", self.prefix, self.next_id);
            line::encode(&record, &mut self.lines);
            self.batch.push(record);
        }
        if dropped > 0 {
            self.metrics.ledger_dropped.inc_by(dropped);
            if self.drop_log.due() {
                tracing::error!(
                    dropped,
                    held = self.journal.held(committed),
                    "usage ledger full (the store is down or slow): records are being dropped (see sluice_ledger_dropped_total)"
                );
            }
        }
        if self.batch.is_empty() {
            return;
        }
        if let Err(error) = self.journal.append(&self.lines, self.batch.len() as u64) {
            self.journal_failed(&error);
        }
        self.lines.clear();
        self.handoff.put(&mut self.batch);
    }

    fn journal_failed(&self, error: &std::io::Error) {
        self.metrics.ledger_journal_errors.inc();
        if self.error_log.due() {
            tracing::error!(%error, "usage journal write failed: records not yet in the store would not survive a crash");
        }
    }
}

/// The start time and a random number: ids never repeat across restarts
/// or replicas.
fn id_prefix() -> String {
    format!(
        "{:x}-{:016x}",
        crate::engines::metering::unix_ms(),
        fastrand::u64(..)
    )
}
/// Joins the journal thread off the async threads. Part of shutdown
/// itself, awaited in place: there is no task owner left to hand it to.
#[allow(
    clippy::disallowed_methods,
    reason = "the last step of shutdown, awaited in place"
)]
async fn join(thread: JoinHandle<()>) -> Result<std::thread::Result<()>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || thread.join()).await
}
