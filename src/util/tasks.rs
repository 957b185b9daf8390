//! Background work the gateway owns. Every task that outlives the call that
//! started it (spend charges, limiter corrections, cache writes, webhooks,
//! probes, store writers, connection drivers) is spawned here, so shutdown
//! can stop the loops and wait for the one-shot work to finish: a charge or
//! a cache write queued by the last request is not lost by exiting early.
//! Bare `tokio::spawn` is disallowed by clippy (`clippy.toml`) for that reason.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// A handle on the gateway's tasks; clones share them.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    /// Cancelled at shutdown (or when the owner of a child set goes away):
    /// loops end at their next wait.
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `future` as an owned task: shutdown waits for it.
    #[allow(clippy::disallowed_methods, reason = "the one place tasks are spawned")]
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(future)
    }

    /// Runs `future` as an owned task that ends at the stop signal, even
    /// mid-wait: for loops and drivers that have nothing to finish.
    pub fn spawn_until_stopped<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.spawn(async move {
            tokio::select! {
                () = future => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Runs `work` on the blocking pool, tracked like any other task.
    pub fn spawn_blocking<F, R>(&self, work: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.tracker.spawn_blocking(work)
    }

    /// Resolves when the loops should end.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// The stop signal itself, for loops written against a token.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Tasks tracked with these but stopped on their own (or with these):
    /// the loops of one config snapshot, ended when it is replaced.
    pub fn child(&self) -> Self {
        Self {
            tracker: self.tracker.clone(),
            stop: self.stop.child_token(),
        }
    }

    /// Ends the loops of this set (and of its children).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops the loops and waits up to `within` for every task to finish;
    /// `false` when some were still running.
    pub async fn drain(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}
