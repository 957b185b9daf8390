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

use tokio::runtime::{Handle, Runtime};
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
    /// Every worker's runtime, the main one (worker 0) first: never empty.
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Spread {
    /// Where the next connection (or HTTP/2 stream) runs.
    pub fn pick(&self) -> &Handle {
        let index = self.next.fetch_add(1, Relaxed) % self.handles.len();
        // `Workers::start` puts the main runtime first, so never empty.
        &self.handles[index]
    }
}

impl Workers {
    /// `count` workers in all: `main`, the runtime of the calling thread,
    /// is worker 0, and `count - 1` threads are started for the others.
    pub fn start(count: usize, main: &Handle) -> std::io::Result<Self> {
        let (threads, extra): (Vec<_>, Vec<_>) = (1..count.max(1))
            .map(Worker::start)
            .collect::<std::io::Result<_>>()?;
        let handles = std::iter::once(main.clone()).chain(extra).collect();
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

/// A worker's runtime: single-threaded, writing its thread's log lines
/// each time it goes idle (`infra::log_lines`).
pub fn single_threaded() -> std::io::Result<Runtime> {
    with_log_lines(&mut tokio::runtime::Builder::new_current_thread())
}

/// `[server] runtime = "shared"`: one work-stealing pool of `threads`, its
/// threads writing their log lines as the workers' do.
pub fn shared(threads: usize) -> std::io::Result<Runtime> {
    with_log_lines(tokio::runtime::Builder::new_multi_thread().worker_threads(threads))
}

fn with_log_lines(builder: &mut tokio::runtime::Builder) -> std::io::Result<Runtime> {
    builder
        .enable_all()
        .on_thread_park(super::telemetry::flush_pending)
        .build()
}

impl Worker {
    fn start(index: usize) -> std::io::Result<(Self, Handle)> {
        let runtime = single_threaded()?;
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
        let runtime = single_threaded().unwrap();
        let workers = Workers::start(3, runtime.handle()).unwrap();
        let spread = workers.spread();
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
            seen.push(runtime.block_on(spread.pick().spawn(task)).unwrap());
        }
        // Worker 0 is the main runtime, whose thread is this one.
        assert_eq!(seen, [(0, 1), (1, 2), (2, 3), (0, 1), (1, 2), (2, 3)]);
        workers.stop();
    }

    #[test]
    fn one_worker_is_the_main_runtime_alone() {
        let runtime = single_threaded().unwrap();
        let workers = Workers::start(0, runtime.handle()).unwrap();
        let spread = workers.spread();
        for _ in 0..2 {
            let task = async { (current(), std::thread::current().id()) };
            let (worker, thread) = runtime.block_on(spread.pick().spawn(task)).unwrap();
            assert_eq!((worker, thread), (0, std::thread::current().id()));
        }
        assert_eq!(*PerWorker::new(0, || 7).get(), 7);
        workers.stop();
    }
}
