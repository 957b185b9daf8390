//! A counting semaphore with a fair, prioritised wait queue. Slots go to the
//! highest class first; within a class, keys take turns (round robin), so one
//! key's thousand queued requests do not delay another key's one. Every
//! `starvation_every`th slot goes to the longest-waiting request of any class.
//!
//! Uncontended acquire and release are single atomic operations; the mutex
//! is taken only while requests are waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{Priority, QueueConfig};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The queue was at `max_depth`.
    Full { retry_after: Duration },
    /// No slot within the class's `max_wait`.
    TimedOut { retry_after: Duration },
}

struct Waiter {
    id: u64,
    enqueued: Instant,
    grant: oneshot::Sender<Permit>,
}

/// One class: keys in turn, each with its own FIFO.
#[derive(Default)]
struct ClassQueue {
    turns: VecDeque<Arc<str>>,
    by_key: HashMap<Arc<str>, VecDeque<Waiter>>,
}

impl ClassQueue {
    fn push(&mut self, key: Arc<str>, waiter: Waiter) {
        let queue = self.by_key.entry(key.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(key);
        }
        queue.push_back(waiter);
    }

    /// The next key's oldest waiter; the key goes to the back of the line.
    fn pop(&mut self) -> Option<Waiter> {
        let key = self.turns.pop_front()?;
        let queue = self.by_key.get_mut(&key)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.by_key.remove(&key);
        } else {
            self.turns.push_back(key);
        }
        waiter
    }

    fn oldest(&self) -> Option<Instant> {
        self.by_key
            .values()
            .filter_map(|q| q.front())
            .map(|w| w.enqueued)
            .min()
    }

    fn remove(&mut self, id: u64) -> bool {
        let mut emptied = None;
        let mut found = false;
        for (key, queue) in &mut self.by_key {
            if let Some(at) = queue.iter().position(|w| w.id == id) {
                queue.remove(at);
                found = true;
                if queue.is_empty() {
                    emptied = Some(key.clone());
                }
                break;
            }
        }
        if let Some(key) = emptied {
            self.by_key.remove(&key);
            self.turns.retain(|k| *k != key);
        }
        found
    }
}

#[derive(Default)]
struct Queues {
    classes: [ClassQueue; 5],
    grants: u64,
}

impl Queues {
    fn next(&mut self, starvation_every: u32) -> Option<Waiter> {
        self.grants += 1;
        let anti_starvation = self
            .grants
            .is_multiple_of(u64::from(starvation_every.max(1)));
        let class = if anti_starvation {
            (0..5)
                .filter_map(|c| Some((self.classes[c].oldest()?, c)))
                .min()
                .map(|(_, c)| c)
        } else {
            (0..5).find(|c| !self.classes[*c].turns.is_empty())
        }?;
        self.classes[class].pop()
    }
}

pub struct Scheduler {
    /// Changes on reload (`reshape`); permits held keep counting.
    capacity: AtomicUsize,
    in_use: AtomicUsize,
    waiting: AtomicUsize,
    queues: Mutex<Queues>,
    config: ArcSwap<QueueConfig>,
    next_id: AtomicU64,
    /// Mean slot hold time in microseconds (f64 bits), for retry hints.
    mean_hold_us: AtomicU64,
}

/// A slot; dropping it hands the slot to the next waiter.
pub struct Permit {
    /// `None` once disarmed (a grant that could not be delivered).
    scheduler: Option<Arc<Scheduler>>,
    since: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.record_hold(self.since.elapsed());
            scheduler.release();
        }
    }
}

impl Scheduler {
    pub fn new(capacity: usize, config: Arc<QueueConfig>) -> Arc<Self> {
        Arc::new(Self {
            capacity: AtomicUsize::new(capacity.max(1)),
            in_use: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            queues: Mutex::new(Queues::default()),
            config: ArcSwap::new(config),
            next_id: AtomicU64::new(0),
            mean_hold_us: AtomicU64::new(0f64.to_bits()),
        })
    }

    /// A reload's new capacity and queue settings. Waiters keep their place;
    /// room made by a larger capacity goes to them at once.
    pub fn reshape(self: &Arc<Self>, capacity: usize, config: Arc<QueueConfig>) {
        self.config.store(config);
        self.set_capacity(capacity);
    }

    /// A new capacity, e.g. an adaptive limit's. Permits held above a smaller
    /// one are not taken back: no slot is granted until enough are released.
    pub fn set_capacity(self: &Arc<Self>, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::SeqCst);
        while self.waiting.load(Ordering::SeqCst) > 0 && self.try_take() {
            self.hand_over();
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::SeqCst)
    }

    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// How long a request joining now would likely wait for a slot.
    pub fn expected_wait(&self) -> Duration {
        let depth = self.depth();
        if depth == 0 && self.has_room() {
            return Duration::ZERO;
        }
        self.estimate(depth)
    }

    /// Whether a call of a class above `class` waits for a slot: work of
    /// `class` that can hold back (batch lines) should. Lock-free while
    /// nothing waits.
    pub fn waiting_above(&self, class: Priority) -> bool {
        if self.depth() == 0 {
            return false;
        }
        self.queues.lock().is_ok_and(|queues| {
            queues.classes[..class.index()]
                .iter()
                .any(|queue| !queue.turns.is_empty())
        })
    }

    pub fn has_room(&self) -> bool {
        self.in_use() < self.capacity()
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            scheduler: Some(self.clone()),
            since: Instant::now(),
        }
    }

    fn try_take(&self) -> bool {
        let capacity = self.capacity();
        self.in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used < capacity).then_some(used + 1)
            })
            .is_ok()
    }

    /// Waits for a slot in `class` on behalf of `key`, up to the class's
    /// `max_wait`. Dropping the future leaves the queue.
    pub async fn acquire(
        self: &Arc<Self>,
        class: Priority,
        key: Arc<str>,
    ) -> Result<Permit, Rejected> {
        if self.waiting.load(Ordering::SeqCst) == 0 && self.try_take() {
            return Ok(self.permit());
        }
        let (grant, granted) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let Ok(mut queues) = self.queues.lock() else {
                return Err(Rejected::Full {
                    retry_after: Duration::from_secs(1),
                });
            };
            // `waiting` changes only under this lock, so it is exact here.
            let depth = self.depth();
            // A slot may have freed up since the fast path looked.
            if depth == 0 && self.try_take() {
                return Ok(self.permit());
            }
            if depth >= self.config.load().max_depth {
                return Err(Rejected::Full {
                    retry_after: self.estimate(depth),
                });
            }
            queues.classes[class.index()].push(
                key,
                Waiter {
                    id,
                    enqueued: Instant::now(),
                    grant,
                },
            );
            self.waiting.fetch_add(1, Ordering::SeqCst);
            // A release may have happened between the checks: hand it on.
            if self.try_take() {
                self.grant_next(&mut queues);
            }
        }
        let mut leave = LeaveOnDrop {
            scheduler: self,
            class,
            id,
            armed: true,
        };
        let max_wait = self.config.load().max_wait(class);
        let waited = tokio::time::timeout(max_wait, granted).await;
        match waited {
            Ok(Ok(permit)) => {
                leave.armed = false;
                Ok(permit)
            }
            _ => {
                let depth = self.depth();
                drop(leave);
                Err(Rejected::TimedOut {
                    retry_after: self.estimate(depth),
                })
            }
        }
    }

    fn release(self: &Arc<Self>) {
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 && self.try_take() {
            self.hand_over();
        }
    }

    fn hand_over(self: &Arc<Self>) {
        match self.queues.lock() {
            Ok(mut queues) => self.grant_next(&mut queues),
            Err(_) => {
                self.in_use.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Gives a slot already counted in `in_use` to the next waiter still
    /// there, or returns it. Called with the queue locked.
    fn grant_next(self: &Arc<Self>, queues: &mut Queues) {
        let starvation_every = self.config.load().starvation_every;
        while let Some(waiter) = queues.next(starvation_every) {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Err(mut unsent) = waiter.grant.send(self.permit()) {
                // Its client left. Disarm, so the drop does not release
                // (and re-lock) while the queue is held; try the next.
                unsent.scheduler = None;
            } else {
                return;
            }
        }
        self.in_use.fetch_sub(1, Ordering::SeqCst);
    }

    fn record_hold(&self, held: Duration) {
        let sample = held.as_secs_f64() * 1e6;
        let _ = self
            .mean_hold_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let mean = f64::from_bits(bits);
                let next = if mean == 0.0 {
                    sample
                } else {
                    mean * 0.9 + sample * 0.1
                };
                Some(next.to_bits())
            });
    }

    /// When a request joining now would likely get a slot: the queue ahead
    /// drains `capacity` at a time, one mean hold time each.
    fn estimate(&self, depth: usize) -> Duration {
        let hold = f64::from_bits(self.mean_hold_us.load(Ordering::Relaxed)) / 1e6;
        let rounds = (depth + 1).div_ceil(self.capacity()) as f64;
        Duration::from_secs_f64((hold * rounds).max(0.001))
    }
}

/// Removes a waiter that gave up (timed out or its client left).
struct LeaveOnDrop<'a> {
    scheduler: &'a Arc<Scheduler>,
    class: Priority,
    id: u64,
    armed: bool,
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(mut queues) = self.scheduler.queues.lock()
            && queues.classes[self.class.index()].remove(self.id)
        {
            self.scheduler.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        // If it was granted meanwhile, the permit sits in the dropped
        // receiver and its drop hands the slot on.
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests own their tasks")]
mod tests {
    use super::*;

    fn make(capacity: usize, max_depth: usize) -> Arc<Scheduler> {
        let config = QueueConfig {
            max_depth,
            max_wait: Duration::from_secs(60),
            ..QueueConfig::default()
        };
        Scheduler::new(capacity, Arc::new(config))
    }

    /// Queues one request; it records its label when admitted and holds the
    /// slot until the test releases it.
    fn enqueue(
        scheduler: &Arc<Scheduler>,
        class: Priority,
        key: &str,
        label: String,
        order: &Arc<Mutex<Vec<String>>>,
    ) -> tokio::task::JoinHandle<Option<Permit>> {
        let (scheduler, order, key) = (scheduler.clone(), order.clone(), Arc::from(key));
        tokio::spawn(async move {
            let permit = scheduler.acquire(class, key).await.ok()?;
            order.lock().unwrap().push(label);
            Some(permit)
        })
    }

    /// Frees the held slot, then each admitted task's slot in the order the
    /// scheduler admits them.
    async fn release_in_turn(
        held: Permit,
        mut tasks: Vec<tokio::task::JoinHandle<Option<Permit>>>,
    ) {
        drop(held);
        while !tasks.is_empty() {
            settle().await;
            let next = tasks.iter().position(|t| t.is_finished()).unwrap();
            drop(tasks.remove(next).await.unwrap());
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn realtime_overtakes_queued_batch_work() {
        let scheduler = make(1, 100);
        let held = scheduler
            .acquire(Priority::Standard, Arc::from("x"))
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..10 {
            tasks.push(enqueue(
                &scheduler,
                Priority::Batch,
                "bulk",
                format!("batch{i}"),
                &order,
            ));
            settle().await;
        }
        for i in 0..3 {
            tasks.push(enqueue(
                &scheduler,
                Priority::Realtime,
                "app",
                format!("rt{i}"),
                &order,
            ));
            settle().await;
        }
        assert_eq!(scheduler.depth(), 13);
        release_in_turn(held, tasks).await;
        let order = order.lock().unwrap().clone();
        assert_eq!(&order[..3], ["rt0", "rt1", "rt2"], "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_take_turns_within_a_class() {
        let scheduler = make(1, 100);
        let held = scheduler
            .acquire(Priority::Standard, Arc::from("x"))
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..50 {
            tasks.push(enqueue(
                &scheduler,
                Priority::Standard,
                "A",
                format!("A{i}"),
                &order,
            ));
        }
        settle().await;
        tasks.push(enqueue(
            &scheduler,
            Priority::Standard,
            "B",
            "B".into(),
            &order,
        ));
        settle().await;
        release_in_turn(held, tasks).await;
        let order = order.lock().unwrap().clone();
        let b = order.iter().position(|l| l == "B").unwrap();
        assert!(b <= 1, "B was served {b}th: {:?}", &order[..5]);
    }

    #[tokio::test(start_paused = true)]
    async fn low_still_moves_under_constant_realtime_load() {
        let scheduler = make(1, 1000);
        let held = scheduler
            .acquire(Priority::Standard, Arc::from("x"))
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = vec![enqueue(
            &scheduler,
            Priority::Low,
            "cron",
            "low".into(),
            &order,
        )];
        settle().await;
        tokio::time::advance(Duration::from_millis(1)).await;
        for i in 0..40 {
            tasks.push(enqueue(
                &scheduler,
                Priority::Realtime,
                "app",
                format!("rt{i}"),
                &order,
            ));
        }
        settle().await;
        release_in_turn(held, tasks).await;
        let order = order.lock().unwrap().clone();
        let low = order.iter().position(|l| l == "low").unwrap();
        assert!(low < 10, "low waited behind {low} realtime requests");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_and_a_long_wait_are_refused() {
        let scheduler = make(1, 2);
        let _held = scheduler
            .acquire(Priority::Standard, Arc::from("x"))
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let _a = enqueue(&scheduler, Priority::Standard, "a", "a".into(), &order);
        let _b = enqueue(&scheduler, Priority::Standard, "b", "b".into(), &order);
        settle().await;
        let refused = scheduler.acquire(Priority::Standard, Arc::from("c")).await;
        assert!(matches!(refused, Err(Rejected::Full { .. })));

        let slow = make(1, 10);
        let _held = slow
            .acquire(Priority::Standard, Arc::from("x"))
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let slow = slow.clone();
            async move { slow.acquire(Priority::Standard, Arc::from("y")).await }
        });
        settle().await;
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(
            waiting.await.unwrap(),
            Err(Rejected::TimedOut { .. })
        ));
        assert_eq!(slow.depth(), 0, "a timed-out request leaves the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_leaves_frees_its_place() {
        let scheduler = make(1, 10);
        let held = scheduler
            .acquire(Priority::Standard, Arc::from("x"))
            .await
            .unwrap();
        let gone = tokio::spawn({
            let scheduler = scheduler.clone();
            async move {
                scheduler
                    .acquire(Priority::Standard, Arc::from("gone"))
                    .await
                    .is_ok()
            }
        });
        settle().await;
        assert_eq!(scheduler.depth(), 1);
        gone.abort();
        settle().await;
        assert_eq!(scheduler.depth(), 0);
        drop(held);
        assert_eq!(
            scheduler.in_use(),
            0,
            "the slot was not handed to the departed caller"
        );
        let again = scheduler.acquire(Priority::Standard, Arc::from("z")).await;
        assert!(again.is_ok());
    }
}
