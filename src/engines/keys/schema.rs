//! What the two keys stores share: the schema and the row shape.
//!
//! Every write bumps a one-row `sluice_keys_version` counter in the same
//! transaction, so a replica learns whether anything changed from one
//! cheap read instead of comparing the whole table.

use super::{KeySettings, KeyStoreError, RuntimeKey};

/// Both dialects accept it as is. Revoked keys keep their row (for audit)
/// with `revoked_at` set; only live keys need unique names.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sluice_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, key_sha256 TEXT NOT NULL UNIQUE, hint TEXT NOT NULL,
    settings TEXT NOT NULL, revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, revoked_at BIGINT);
CREATE UNIQUE INDEX IF NOT EXISTS sluice_keys_live_name ON sluice_keys (name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS sluice_keys_version (
    one INTEGER PRIMARY KEY CHECK (one = 1), version BIGINT NOT NULL);
INSERT INTO sluice_keys_version (one, version) VALUES (1, 0) ON CONFLICT DO NOTHING;";

/// The unique index that makes a second live key of one name fail.
pub(super) const NAME_INDEX: &str = "sluice_keys_live_name";

pub(super) const COLUMNS: &str =
    "id, name, key_sha256, hint, settings, revision, created_at, updated_at";

/// One row as read, before its settings JSON is parsed.
pub(super) struct Row {
    pub id: String,
    pub name: String,
    pub key_sha256: String,
    pub hint: String,
    pub settings: String,
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Row {
    /// `None` (logged) when the settings are not readable: that one key
    /// stops resolving instead of the whole set failing to load.
    pub fn into_key(self) -> Option<RuntimeKey> {
        let settings: KeySettings = match serde_json::from_str(&self.settings) {
            Ok(settings) => settings,
            Err(error) => {
                tracing::warn!(id = %self.id, %error, "runtime key skipped: its stored settings are unreadable");
                return None;
            }
        };
        Some(RuntimeKey {
            id: self.id,
            name: self.name,
            key_sha256: self.key_sha256,
            hint: self.hint,
            settings,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision,
        })
    }
}

/// The settings as stored.
pub(super) fn settings_json(key: &RuntimeKey) -> Result<String, KeyStoreError> {
    serde_json::to_string(&key.settings).map_err(super::error::unavailable)
}
