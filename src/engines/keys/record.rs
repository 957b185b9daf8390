//! A runtime key as stored, and as the gateway's key table takes it.

use serde::{Deserialize, Serialize};

use super::{KeyStoreError, secret};
use crate::config::{Budget, KeyConfig, Priority, TokenBudget, sha256};

/// Everything about a key except who it is: the same fields, with the same
/// names, as a `[[keys]]` entry in the config file. Stored as JSON, so a
/// field added later reads as its default from older rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeySettings {
    pub org: Option<String>,
    pub tier: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Allow-list of model names; `None` allows every model.
    pub models: Option<Vec<String>>,
    pub priority: Option<Priority>,
    pub max_priority: Option<Priority>,
    pub cache: bool,
    /// Calls at degradation level 4 become asynchronous jobs (202).
    pub queue_in_maintenance: bool,
    #[serde(flatten)]
    pub budget: TokenBudget,
    #[serde(flatten)]
    pub spend: Budget,
}

impl Default for KeySettings {
    /// What a config key gets when it sets nothing.
    fn default() -> Self {
        Self {
            org: None,
            tier: None,
            rpm: None,
            tpm: None,
            models: None,
            priority: None,
            max_priority: None,
            cache: true,
            queue_in_maintenance: false,
            budget: TokenBudget::default(),
            spend: Budget::default(),
        }
    }
}

/// What `POST /admin/keys` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub settings: KeySettings,
}

/// A key made at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeKey {
    /// `key_` and 16 hex characters; never reused.
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret; the secret itself is not kept.
    pub key_sha256: String,
    /// The secret's last four characters, to tell keys apart in listings.
    pub hint: String,
    pub settings: KeySettings,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// Bumped by every write, so a write based on a stale read is refused.
    pub revision: i64,
}

impl RuntimeKey {
    /// A new key with a fresh id and secret; the secret is returned beside
    /// it and nowhere else.
    pub fn issue(new: NewKey) -> Result<(Self, String), KeyStoreError> {
        let secret = secret::new_secret()?;
        let now = unix_now();
        let hint = secret[secret.len() - 4..].to_owned();
        let key = Self {
            id: secret::new_id()?,
            name: new.name,
            key_sha256: hex::encode(sha256(&secret)),
            hint,
            settings: new.settings,
            created_at: now,
            updated_at: now,
            revision: 1,
        };
        Ok((key, secret))
    }

    /// The key as a config entry, identified by digest only.
    pub fn to_config(&self) -> KeyConfig {
        let settings = self.settings.clone();
        KeyConfig {
            id: Some(self.id.clone()),
            key: None,
            key_sha256: Some(self.key_sha256.clone()),
            name: self.name.clone(),
            org: settings.org,
            models: settings.models,
            tier: settings.tier,
            rpm: settings.rpm,
            tpm: settings.tpm,
            cache: settings.cache,
            priority: settings.priority,
            max_priority: settings.max_priority,
            queue_in_maintenance: settings.queue_in_maintenance,
            budget: settings.budget,
            spend: settings.spend,
        }
    }
}

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_resolves_by_its_secret_only_through_its_digest() {
        let new = NewKey {
            name: "team-a".into(),
            settings: KeySettings {
                rpm: Some(60),
                ..KeySettings::default()
            },
        };
        let (key, secret) = RuntimeKey::issue(new).unwrap();
        assert!(secret.ends_with(&key.hint));
        let config = key.to_config();
        assert_eq!(config.digest(), Some(sha256(&secret)));
        assert_eq!(config.id(), key.id);
        assert!(config.key.is_none() && config.cache);
        assert_eq!(config.rpm, Some(60));
    }

    #[test]
    fn stored_settings_read_back_and_missing_fields_default() {
        let settings = KeySettings {
            models: Some(vec!["gpt-4o".into()]),
            priority: Some(Priority::Batch),
            spend: Budget {
                budget_daily_usd: Some(5.0),
                budget_monthly_usd: None,
            },
            ..KeySettings::default()
        };
        let text = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            serde_json::from_str::<KeySettings>(&text).unwrap(),
            settings
        );
        let old: KeySettings = serde_json::from_str(r#"{"rpm": 5}"#).unwrap();
        assert!(old.cache && old.rpm == Some(5));
    }
}
