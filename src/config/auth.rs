//! `[auth]`: whether a key is required, and the failed-authentication throttle.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// With `false`, requests without a key are served as `anonymous`.
    pub required: bool,
    /// Failed authentication attempts a client address may make per minute
    /// (and at once) before its attempts are refused with 429; 0 turns the
    /// throttle off (e.g. behind a proxy that hides client addresses).
    pub failed_auth_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            failed_auth_per_minute: 120,
        }
    }
}
