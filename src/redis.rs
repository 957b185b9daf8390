//! One shared Redis connection for the gateway (limits, cache). It connects
//! in the background, so the gateway starts and applies its `on_error` policy
//! even while Redis is down; after the first connection the manager
//! reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis unavailable: {0}")]
pub struct RedisError(pub String);

#[derive(Clone)]
pub struct SharedRedis {
    connection: Arc<OnceCell<ConnectionManager>>,
    /// Bound on one round trip.
    pub timeout: Duration,
}

impl SharedRedis {
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis.url: {e}"))?;
        let connection = Arc::new(OnceCell::new());
        let cell = connection.clone();
        tokio::spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
                .set_response_timeout(Some(timeout));
            loop {
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(manager) => {
                        let _ = cell.set(manager);
                        tracing::info!("connected to Redis");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot reach Redis yet; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            connection,
            timeout,
        })
    }

    /// Runs one command or script, bounded by the timeout.
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
        tokio::time::timeout(self.timeout, call(manager))
            .await
            .map_err(|_| RedisError(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| RedisError(e.to_string()))
    }
}
