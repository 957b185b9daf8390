//! `[[keys]]`: virtual keys, their limits, budgets and classes; key digests.

use serde::{Deserialize, Serialize};

use super::{Budget, Priority, default_true};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBudget {
    /// Prompts with more tokens get 400 `context_length_exceeded`.
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    /// The request's max output tokens is clamped to this, or set when absent.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    #[serde(default)]
    pub key: Option<String>,
    /// Hex SHA-256 of the key, so plain keys need not sit in config files.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// A stable id (`/admin/keys/{id}`): limiter state, cache scope, spend
    /// and stored responses follow it, so renaming a key orphans nothing.
    /// Defaults to the name.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub org: Option<String>,
    /// Allow-list of model names; absent means every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Names a `[tiers.NAME]` whose limits apply where `rpm`/`tpm` are unset.
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// `false` keeps this key's requests out of the response cache.
    #[serde(default = "default_true")]
    pub cache: bool,
    /// The class of this key's requests without an `x-sluice-priority` header.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The highest class this key may ask for.
    #[serde(default)]
    pub max_priority: Option<Priority>,
    /// At degradation level 4 (maintenance), this key's calls are accepted
    /// as asynchronous jobs (202) that run once the model is back, instead
    /// of a 503.
    #[serde(default)]
    pub queue_in_maintenance: bool,
    #[serde(flatten)]
    pub budget: TokenBudget,
    #[serde(flatten)]
    pub spend: Budget,
}

impl KeyConfig {
    /// The stable id: `id` when set, else the name.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }

    /// SHA-256 of the key, whichever way the file gave it; `None` when misconfigured.
    pub fn digest(&self) -> Option<KeyDigest> {
        match (&self.key, &self.key_sha256) {
            (Some(plain), None) => Some(sha256(plain)),
            (None, Some(hex_digest)) => decode_sha256(hex_digest),
            _ => None,
        }
    }
}

/// Keys are stored and compared only as SHA-256 digests.
pub type KeyDigest = [u8; 32];

pub fn sha256(text: &str) -> KeyDigest {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

pub(super) fn decode_sha256(hex_digest: &str) -> Option<KeyDigest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut digest).ok()?;
    Some(digest)
}
