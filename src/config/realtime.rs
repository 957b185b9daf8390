//! `[realtime]`: Realtime API sessions (`GET /v1/realtime`, a WebSocket)
//! held open through the gateway.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// Sessions one key may hold open at once; more are refused with 429.
    pub max_sessions_per_key: usize,
    /// A session with no message either way for this long is closed.
    #[serde(with = "duration::serde_duration")]
    pub idle_timeout: Duration,
    /// A session is closed this long after it opened, whatever it does.
    #[serde(with = "duration::serde_duration")]
    pub max_session: Duration,
    /// The largest message either side may send (audio arrives in base64
    /// chunks of a few hundred KiB; OpenAI takes up to 15 MiB).
    pub max_message_bytes: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            max_sessions_per_key: 10,
            idle_timeout: Duration::from_secs(600),
            // OpenAI ends a Realtime session after 60 minutes.
            max_session: Duration::from_secs(3600),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}
