//! The two stores behind `RuntimeKeys`, one interface.

use super::postgres::PostgresKeys;
use super::schema::Row;
use super::sqlite::SqliteKeys;
use super::{KeyStoreError, RuntimeKey};

pub(super) enum Backend {
    Sqlite(SqliteKeys),
    Postgres(PostgresKeys),
}

impl Backend {
    /// The change counter.
    pub async fn version(&self) -> Result<i64, KeyStoreError> {
        match self {
            Self::Sqlite(store) => store.version().await,
            Self::Postgres(store) => store.version().await,
        }
    }

    /// Live keys, at most `limit`.
    pub async fn load(&self, limit: usize) -> Result<Vec<RuntimeKey>, KeyStoreError> {
        let rows = match self {
            Self::Sqlite(store) => store.load(limit).await?,
            Self::Postgres(store) => store.load(limit).await?,
        };
        Ok(rows.into_iter().filter_map(Row::into_key).collect())
    }

    /// One live key, read from the store (not the loaded set).
    pub async fn fetch(&self, id: &str) -> Result<Option<RuntimeKey>, KeyStoreError> {
        let row = match self {
            Self::Sqlite(store) => store.fetch(id).await?,
            Self::Postgres(store) => store.fetch(id).await?,
        };
        Ok(row.and_then(Row::into_key))
    }

    /// Fails with `DuplicateName` when a live key has the name.
    pub async fn insert(&self, key: &RuntimeKey) -> Result<(), KeyStoreError> {
        match self {
            Self::Sqlite(store) => store.insert(key).await,
            Self::Postgres(store) => store.insert(key).await,
        }
    }

    /// Writes `key` over the live row whose revision is still `expected`;
    /// `false` when there is none (revoked, or changed meanwhile).
    pub async fn replace(&self, key: &RuntimeKey, expected: i64) -> Result<bool, KeyStoreError> {
        match self {
            Self::Sqlite(store) => store.replace(key, expected).await,
            Self::Postgres(store) => store.replace(key, expected).await,
        }
    }

    /// `false` when no live key has the id.
    pub async fn revoke(&self, id: &str, at: i64) -> Result<bool, KeyStoreError> {
        match self {
            Self::Sqlite(store) => store.revoke(id, at).await,
            Self::Postgres(store) => store.revoke(id, at).await,
        }
    }

    /// The URL to LISTEN on, for a store that sends change notifications.
    pub fn notifications(&self) -> Option<&str> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(store) => Some(store.url()),
        }
    }
}
