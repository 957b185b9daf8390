//! Thread per core: connections spread over single-threaded runtimes, one
//! per worker thread, as nginx spreads them over its worker processes.
//!
//! On a work-stealing runtime a proxied call hops between threads: the
//! client connection's task, the upstream connection's task and the log
//! writer wake each other across cores, each hop a futex wake-up and a
//! context switch, and every waker and queue is an atomic shared by all
//! threads. Here a connection is accepted on the main runtime and handed to
//! one worker, where it stays: its requests, their upstream calls (through
//! that worker's own connection pool, [`PerWorker`]) and the tasks they
//! spawn all run on that thread. Background work started at boot stays on
//! the main runtime, which is worker 0.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The worker this thread is; 0 on any thread that is not a worker's.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker the calling thread belongs to (0 outside the workers).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// One value per worker, so each worker uses its own (a connection pool:
/// an upstream connection's task then runs on the thread of the calls it
/// carries). Outside the workers, and on a work-stealing runtime, the first.
pub struct PerWorker<T>(Box<[T]>);

impl<T> PerWorker<T> {
    /// `count` values (at least one), each made by `make`.
    pub fn new(count: usize, make: impl FnMut() -> T) -> Self {
        Self(std::iter::repeat_with(make).take(count.max(1)).collect())
    }

    /// The calling worker's value.
    pub fn get(&self) -> &T {
        // `new` makes at least one, so the index is always in range.
        &self.0[current() % self.0.len()]
    }
}

/// The worker threads besides the main one, each running a single-threaded
/// runtime until [`Workers::stop`].
pub struct Workers {
    threads: Vec<Worker>,
    spread: Arc<Spread>,
}

struct Worker {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Hands out the workers' runtimes to connections, round robin.
pub struct Spread {
    /// The runtimes of workers 1 and up (0 is the main runtime).
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Spread {
    /// Workers in all, the main runtime's included.
    pub fn count(&self) -> usize {
        self.handles.len() + 1
    }

    /// Where the next connection (or HTTP/2 stream) runs: `None` for the
    /// calling runtime, which is the main one for the accept loops.
    pub fn pick(&self) -> Option<&Handle> {
        let index = self.next.fetch_add(1, Relaxed) % self.count();
        index
            .checked_sub(1)
            .and_then(|extra| self.handles.get(extra))
    }
}

impl Workers {
    /// `count` workers in all: the calling thread's runtime is worker 0,
    /// and `count - 1` threads are started for the others.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let (threads, handles) = (1..count.max(1))
            .map(Worker::start)
            .collect::<std::io::Result<(Vec<_>, Vec<_>)>>()?;
        let spread = Arc::new(Spread {
            handles,
            next: AtomicUsize::new(0),
        });
        Ok(Self { threads, spread })
    }

    /// What the accept loops hand connections out with.
    pub fn spread(&self) -> Arc<Spread> {
        self.spread.clone()
    }

    /// Stops every worker thread and waits for it; what still runs there
    /// (idle pooled connections) is dropped. Called once the gateway has
    /// drained its connections and tasks.
    pub fn stop(self) {
        let joins: Vec<_> = self
            .threads
            .into_iter()
            .map(|worker| {
                let _ = worker.stop.send(());
                worker.thread
            })
            .collect();
        for thread in joins {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

impl Worker {
    fn start(index: usize) -> std::io::Result<(Self, Handle)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(super::telemetry::flush_pending)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-worker-{index}"))
            .spawn(move || {
                WORKER.with(|worker| worker.set(index));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok((Self { stop, thread }, handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_round_robin_and_each_worker_sees_its_own_slot() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let workers = Workers::start(3).unwrap();
        let spread = workers.spread();
        assert_eq!(spread.count(), 3);
        let slots = std::sync::Arc::new(PerWorker::new(3, {
            let mut made = 0;
            move || {
                made += 1;
                made
            }
        }));
        let mut seen = Vec::new();
        for _ in 0..6 {
            let slots = slots.clone();
            let task = async move { (current(), *slots.get()) };
            let seen_here = match spread.pick() {
                Some(handle) => runtime.block_on(handle.spawn(task)).unwrap(),
                None => runtime.block_on(task),
            };
            seen.push(seen_here);
        }
        assert_eq!(seen, [(0, 1), (1, 2), (2, 3), (0, 1), (1, 2), (2, 3)]);
        workers.stop();
    }

    #[test]
    fn one_worker_is_the_main_runtime_alone() {
        let workers = Workers::start(0).unwrap();
        assert_eq!(workers.spread().count(), 1);
        assert!(workers.spread().pick().is_none());
        assert_eq!(*PerWorker::new(0, || 7).get(), 7);
        workers.stop();
    }
}
