//! `[redis]`: the shared store and what happens while it is down.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Admit requests unlimited while Redis is unreachable (logged and counted).
    #[default]
    FailOpen,
    /// Refuse requests with 503 while Redis is unreachable.
    FailClosed,
}

impl OnRedisError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    #[serde(default)]
    pub on_error: OnRedisError,
    /// Prefix of every key Sluice writes, so fleets can share one Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Bound on one limiter round trip; past it the `on_error` policy applies.
    #[serde(default = "default_redis_timeout", with = "duration::serde_duration")]
    pub timeout: Duration,
}

fn default_key_prefix() -> String {
    "sluice".to_owned()
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(250)
}
