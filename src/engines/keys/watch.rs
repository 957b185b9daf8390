//! The background half of `RuntimeKeys`: reloads the set when another
//! process changes the store, by PostgreSQL notification when it can and by
//! polling always (the only way with SQLite, and the fallback while the
//! LISTEN connection is down).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::RuntimeKeys;
use super::listener::Listener;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A store that stays down is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs a recurring failure at most once per `LOG_EVERY`.
struct Quiet {
    last: Option<Instant>,
    hushed: u64,
}

impl Quiet {
    fn warn(&mut self, what: &str, error: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            self.hushed += 1;
            return;
        }
        tracing::warn!(%error, repeated = self.hushed, "runtime keys: {what}");
        self.last = Some(now);
        self.hushed = 0;
    }
}

impl RuntimeKeys {
    /// Runs until `stop`: polls every `poll_interval` and, for PostgreSQL,
    /// keeps a LISTEN connection (reconnected with back-off) whose
    /// notifications reload at once. Meant to be spawned on the gateway's
    /// task tracker.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut poll = tokio::time::interval(self.options.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let url = self
            .backend
            .notifications()
            .filter(|_| self.options.notifications)
            .map(str::to_owned);
        let mut listener: Option<Listener> = None;
        let mut retry = FIRST_RETRY;
        let mut retry_at = Instant::now();
        let mut quiet = Quiet {
            last: None,
            hushed: 0,
        };
        loop {
            if let Some(url) = &url
                && listener.is_none()
                && Instant::now() >= retry_at
            {
                match Listener::connect(url).await {
                    Ok(connected) => {
                        listener = Some(connected);
                        retry = FIRST_RETRY;
                        // Changes made while not listening.
                        self.reload(&mut quiet).await;
                    }
                    Err(error) => {
                        quiet.warn("cannot LISTEN for key changes; polling", &error);
                        retry_at = Instant::now() + retry;
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                }
            }
            let reconnect = url.is_some() && listener.is_none();
            tokio::select! {
                () = stop.cancelled() => return,
                _ = poll.tick() => self.reload(&mut quiet).await,
                () = tokio::time::sleep_until(retry_at), if reconnect => {}
                notified = next(&mut listener) => match notified {
                    Ok(()) => self.reload(&mut quiet).await,
                    Err(error) => {
                        quiet.warn("the LISTEN connection ended; reconnecting", &error);
                        listener = None;
                        retry_at = Instant::now() + retry;
                    }
                },
            }
        }
    }

    async fn reload(&self, quiet: &mut Quiet) {
        if let Err(error) = self.refresh().await {
            quiet.warn("cannot read the keys store", &error.to_string());
        }
    }
}

/// The next notification, or never without a listener.
async fn next(listener: &mut Option<Listener>) -> Result<(), String> {
    match listener {
        Some(listener) => listener.next().await,
        None => std::future::pending().await,
    }
}
