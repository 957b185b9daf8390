//! One shared Redis connection for the gateway (limits, cache). It connects
//! in the background, so the gateway starts and applies its `on_error` policy
//! even while Redis is down; after the first connection the manager
//! reconnects by itself, at most `RECONNECT_EVERY` apart. A breaker shared by
//! every caller makes calls fail at once while Redis is down, and a prober
//! closes it as soon as Redis answers again (see `breaker`).

mod breaker;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::util::tasks::Tasks;

#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis unavailable: {0}")]
pub struct RedisError(pub String);

/// The longest wait between (re)connection attempts: a Redis that comes
/// back is in use again within a few hundred milliseconds, so limits are
/// exact again well within a second of it answering.
const RECONNECT_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct SharedRedis {
    connection: Arc<OnceCell<ConnectionManager>>,
    breaker: Arc<breaker::Breaker>,
    /// Bound on one round trip.
    pub timeout: Duration,
}

impl SharedRedis {
    pub fn connect(url: &str, timeout: Duration, tasks: &Tasks) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis.url: {e}"))?;
        let connection = Arc::new(OnceCell::new());
        let cell = connection.clone();
        let connecting = async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
                .set_response_timeout(Some(timeout))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(RECONNECT_EVERY);
            let failures = crate::infra::telemetry::LogEvery::new(Duration::from_secs(10));
            loop {
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(manager) => {
                        let _ = cell.set(manager);
                        tracing::info!("connected to Redis");
                        return;
                    }
                    Err(error) => {
                        if failures.due() {
                            tracing::warn!(%error, "cannot reach Redis yet; retrying");
                        }
                        tokio::time::sleep(RECONNECT_EVERY).await;
                    }
                }
            }
        };
        tasks.spawn_until_stopped(connecting);
        let redis = Self {
            connection,
            breaker: Arc::default(),
            timeout,
        };
        tasks.spawn_until_stopped(redis.clone().probe_while_open());
        Ok(redis)
    }

    /// Whenever the breaker opens, pings Redis every `PROBE_EVERY` until it
    /// answers, then closes the breaker.
    async fn probe_while_open(self) {
        loop {
            self.breaker.wait_open().await;
            while !self.breaker.is_closed() {
                tokio::time::sleep(breaker::PROBE_EVERY).await;
                if self.ping().await {
                    self.breaker.succeeded();
                }
            }
        }
    }

    async fn ping(&self) -> bool {
        let Some(mut manager) = self.connection.get().cloned() else {
            return false;
        };
        let ping = async move { redis::cmd("PING").query_async::<String>(&mut manager).await };
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(_)))
    }

    /// Runs one command or script, bounded by the timeout; fails at once
    /// while the breaker is open.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let manager = self
            .connection
            .get()
            .cloned()
            .ok_or_else(|| RedisError("not connected yet".into()))?;
        if !self.breaker.is_closed() {
            return Err(RedisError("failing; waiting for a probe to succeed".into()));
        }
        let result = tokio::time::timeout(self.timeout, call(manager)).await;
        let outcome = match result {
            Err(_) => Err(RedisError(format!("no answer within {:?}", self.timeout))),
            Ok(Err(error)) if is_connection_failure(&error) => Err(RedisError(error.to_string())),
            Ok(Err(error)) => {
                // Redis answered (a command's own error): it is up.
                self.breaker.succeeded();
                return Err(RedisError(error.to_string()));
            }
            Ok(Ok(value)) => Ok(value),
        };
        match &outcome {
            Ok(_) => self.breaker.succeeded(),
            Err(_) => self.breaker.failed(),
        }
        outcome
    }
}

/// Errors that say Redis could not be reached, as opposed to a command it
/// refused.
fn is_connection_failure(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}
