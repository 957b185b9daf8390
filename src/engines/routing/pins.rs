//! Which deployment created each stored response. A response lives on the
//! provider account that made it, so every call naming it (`GET`, `DELETE`,
//! `input_items`, `cancel`, a new response's `previous_response_id`) must go
//! there. Kept in a bounded in-memory map, and in Redis when configured so
//! every replica knows every id.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::config::ResponsesConfig;
use crate::infra::redis::SharedRedis;
use crate::vocab::error::GatewayError;

/// Where a stored response lives, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePin {
    pub deployment: Arc<str>,
    /// The model it was served as (the route the calls on it count against).
    pub model: Arc<str>,
    /// The key that created it: only that key may use it.
    pub owner: Arc<str>,
}

impl ResponsePin {
    fn encode(&self) -> String {
        format!("{}\n{}\n{}", self.deployment, self.model, self.owner)
    }

    fn decode(text: &str) -> Option<Self> {
        let mut fields = text.splitn(3, '\n');
        Some(Self {
            deployment: Arc::from(fields.next()?),
            model: Arc::from(fields.next()?),
            owner: Arc::from(fields.next()?),
        })
    }
}

pub struct ResponsePins {
    memory: moka::sync::Cache<Arc<str>, ResponsePin>,
    shared: Option<Shared>,
    ttl: Duration,
}

struct Shared {
    redis: SharedRedis,
    prefix: String,
}

impl ResponsePins {
    pub fn new(config: &ResponsesConfig, redis: Option<(&SharedRedis, &str)>) -> Self {
        Self {
            memory: moka::sync::Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl)
                .build(),
            shared: redis.map(|(redis, prefix)| Shared {
                redis: redis.clone(),
                prefix: format!("{prefix}:response:"),
            }),
            ttl: config.ttl,
        }
    }

    /// Where `id` lives; `None` when no deployment of this gateway made it
    /// (or its record expired). Fails only when Redis cannot be asked.
    pub async fn find(&self, id: &str) -> Result<Option<ResponsePin>, GatewayError> {
        if let Some(pin) = self.memory.get(id) {
            return Ok(Some(pin));
        }
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let key = format!("{}{id}", shared.prefix);
        let found: Option<String> = shared
            .redis
            .run(|mut manager| async move { redis::AsyncCommands::get(&mut manager, key).await })
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot look up a stored response's deployment");
                GatewayError::ResponseStoreUnavailable
            })?;
        let pin = found.as_deref().and_then(ResponsePin::decode);
        if let Some(pin) = &pin {
            self.memory.insert(Arc::from(id), pin.clone());
        }
        Ok(pin)
    }

    /// Remembers `id` in memory at once; the returned future (when Redis is
    /// configured) shares it with the other replicas. A failed write is
    /// logged: the id still works on this replica.
    pub fn remember(&self, id: &str, pin: ResponsePin) -> Option<BoxFuture<'static, ()>> {
        if !valid_id(id) {
            return None;
        }
        let encoded = pin.encode();
        self.memory.insert(Arc::from(id), pin);
        let shared = self.shared.as_ref()?;
        let key = format!("{}{id}", shared.prefix);
        let redis = shared.redis.clone();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        Some(
            async move {
                let written = redis
                    .run(|mut manager| async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(encoded)
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut manager)
                            .await
                    })
                    .await;
                if let Err(error) = written {
                    tracing::warn!(%error, "cannot share a stored response's deployment");
                }
            }
            .boxed(),
        )
    }
}

/// Response ids as providers make them (`resp_` and 40-odd alphanumerics);
/// anything else is not looked up or stored, and never reaches a URL.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(deployment: &str) -> ResponsePin {
        ResponsePin {
            deployment: Arc::from(deployment),
            model: Arc::from("gpt-4o"),
            owner: Arc::from("team-a"),
        }
    }

    #[test]
    fn pins_round_trip_through_their_encoding() {
        let original = pin("eu-east");
        assert_eq!(ResponsePin::decode(&original.encode()), Some(original));
        assert_eq!(ResponsePin::decode("only-one-field"), None);
    }

    #[tokio::test]
    async fn remembers_in_memory_without_redis() {
        let pins = ResponsePins::new(&ResponsesConfig::default(), None);
        assert!(pins.remember("resp_abc", pin("a")).is_none());
        assert_eq!(pins.find("resp_abc").await.unwrap(), Some(pin("a")));
        assert_eq!(pins.find("resp_other").await.unwrap(), None);
        assert!(pins.remember("../evil", pin("a")).is_none());
        assert_eq!(pins.find("../evil").await.unwrap(), None);
    }

    #[test]
    fn ids_are_checked_before_use() {
        assert!(valid_id("resp_0123abcDEF-x"));
        assert!(!valid_id(""));
        assert!(!valid_id("resp/1"));
        assert!(!valid_id("resp?x=1"));
        assert!(!valid_id(&"a".repeat(129)));
    }
}
