//! `RuntimeKeys`: the live key set of one replica, read without locks, and
//! the writes that change it for the whole fleet.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, watch};

use super::record::unix_now;
use super::sql::KeysDb;
use super::{KeyPatch, KeyStoreError, NewKey, RuntimeKey};
use crate::config::{AdminConfig, KeysStoreSpec};
use crate::util::tasks::Tasks;
use crate::util::text::clip;

/// Most live runtime keys a store holds (and a replica loads).
pub const MAX_KEYS: usize = 100_000;

/// Reads-then-writes retried when another writer got in between.
const WRITE_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct KeysOptions {
    /// How often the store is checked for other processes' changes.
    pub poll_interval: Duration,
    /// LISTEN for PostgreSQL notifications. Off only where they cannot
    /// arrive (a pooler in transaction mode); polling then carries changes.
    pub notifications: bool,
}

impl KeysOptions {
    pub fn from_config(admin: &AdminConfig) -> Self {
        Self {
            poll_interval: admin.keys_poll_interval,
            notifications: true,
        }
    }
}

/// The loaded set and the store version it was loaded at.
struct Snapshot {
    /// `None` until a load succeeded.
    version: Option<i64>,
    keys: Arc<[RuntimeKey]>,
}

/// Ids come from request paths: errors quote at most a clipped one.
fn not_found(id: &str) -> KeyStoreError {
    KeyStoreError::NotFound(clip(id).into_owned())
}

pub struct RuntimeKeys {
    pub(super) backend: KeysDb,
    pub(super) options: KeysOptions,
    snapshot: ArcSwap<Snapshot>,
    changes: watch::Sender<u64>,
    /// One reload at a time, so an older read never replaces a newer one.
    reloading: Mutex<()>,
}

impl RuntimeKeys {
    /// Opens the store and loads its keys. A SQLite file that cannot be
    /// opened is an error; PostgreSQL that is down is not (logged): the set
    /// starts empty and `watch` loads it once the database answers.
    pub async fn open(
        spec: &KeysStoreSpec,
        options: KeysOptions,
        tasks: &Tasks,
    ) -> Result<Self, KeyStoreError> {
        let backend = KeysDb::open(spec, tasks)?;
        let keys = Self {
            backend,
            options,
            snapshot: ArcSwap::from_pointee(Snapshot {
                version: None,
                keys: Arc::from(Vec::new()),
            }),
            changes: watch::Sender::new(0),
            reloading: Mutex::new(()),
        };
        match keys.refresh().await {
            Ok(_) => {}
            Err(error) if keys.backend.is_shared() => {
                tracing::warn!(%error, "runtime keys not loaded yet; retrying in the background");
            }
            Err(error) => return Err(error),
        }
        Ok(keys)
    }

    /// The live (not revoked) keys: one atomic load, no lock.
    pub fn current(&self) -> Arc<[RuntimeKey]> {
        self.snapshot.load().keys.clone()
    }

    /// Bumped each time `current` changes, whoever made the change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Reloads the set if the store's version moved; `true` when it did.
    /// The version is read before the rows, so a write landing in between
    /// makes the next check reload again rather than be missed.
    pub async fn refresh(&self) -> Result<bool, KeyStoreError> {
        let _one = self.reloading.lock().await;
        let version = self.backend.version().await?;
        if self.snapshot.load().version == Some(version) {
            return Ok(false);
        }
        let keys = self.backend.load(MAX_KEYS).await?;
        if keys.len() >= MAX_KEYS {
            tracing::warn!(
                "the keys store holds {MAX_KEYS} or more live keys; only {MAX_KEYS} are loaded"
            );
        }
        self.snapshot.store(Arc::new(Snapshot {
            version: Some(version),
            keys: keys.into(),
        }));
        self.changes.send_modify(|generation| *generation += 1);
        Ok(true)
    }

    /// After a write: this replica sees it before the caller is answered.
    /// The write stands even if this reload fails (the next poll retries).
    async fn refresh_after_write(&self) {
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "runtime keys: reload after a write failed");
        }
    }

    /// A name the loaded set thought free was taken in the store: this
    /// replica is behind, so it catches up now rather than at the next poll.
    async fn refresh_after_conflict<T>(&self, result: &Result<T, KeyStoreError>) {
        if matches!(result, Err(KeyStoreError::DuplicateName(_))) {
            self.refresh_after_write().await;
        }
    }

    fn name_taken(&self, name: &str, except_id: &str) -> bool {
        self.current()
            .iter()
            .any(|key| key.name == name && key.id != except_id)
    }

    /// Makes a key; `check` sees it before it is stored and may refuse it.
    /// Returns the key and its secret, which is not kept anywhere.
    pub async fn create(
        &self,
        new: NewKey,
        check: impl FnOnce(&RuntimeKey) -> Result<(), KeyStoreError>,
    ) -> Result<(RuntimeKey, String), KeyStoreError> {
        if self.current().len() >= MAX_KEYS {
            return Err(KeyStoreError::Full(MAX_KEYS));
        }
        if self.name_taken(&new.name, "") {
            return Err(KeyStoreError::DuplicateName(new.name));
        }
        let (key, secret) = RuntimeKey::issue(new)?;
        check(&key)?;
        let inserted = self.backend.insert(&key).await;
        self.refresh_after_conflict(&inserted).await;
        inserted?;
        self.refresh_after_write().await;
        Ok((key, secret))
    }

    /// Applies `patch` to the stored key; `check` sees the result first.
    /// A concurrent write to the same key makes it start over from the new
    /// row (a few times, then `Conflict`).
    pub async fn update(
        &self,
        id: &str,
        patch: &KeyPatch,
        check: impl Fn(&RuntimeKey) -> Result<(), KeyStoreError>,
    ) -> Result<RuntimeKey, KeyStoreError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(stored) = self.backend.fetch(id).await? else {
                return Err(not_found(id));
            };
            let mut key = stored.clone();
            patch.apply(&mut key.name, &mut key.settings);
            if self.name_taken(&key.name, id) {
                return Err(KeyStoreError::DuplicateName(key.name));
            }
            key.revision = stored.revision + 1;
            key.updated_at = unix_now();
            check(&key)?;
            let replaced = self.backend.replace(&key, stored.revision).await;
            self.refresh_after_conflict(&replaced).await;
            if replaced? {
                self.refresh_after_write().await;
                return Ok(key);
            }
        }
        Err(KeyStoreError::Conflict(clip(id).into_owned()))
    }

    /// Revokes a key for good: it never resolves again and its name is
    /// free for a new key (the row stays, marked, for audit).
    pub async fn revoke(&self, id: &str) -> Result<(), KeyStoreError> {
        if !self.backend.revoke(id, unix_now()).await? {
            return Err(not_found(id));
        }
        self.refresh_after_write().await;
        Ok(())
    }
}
