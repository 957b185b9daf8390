//! Runtime virtual keys: keys made, changed and revoked through
//! `/admin/keys` while the gateway runs, persisted in SQLite or PostgreSQL
//! and shared by every replica that opens the same store.
//!
//! The store only keeps and distributes the key set (`RuntimeKeys::current`
//! and `changes`); merging it with the configured keys into what `auth`
//! resolves is the gateway's job. Secrets are shown once, at creation, and
//! only their SHA-256 is stored.

mod error;
mod listener;
mod patch;
mod record;
mod schema;
mod secret;
mod sql;
mod store;
mod watch;

pub use error::{FieldError, KeyStoreError};
pub use patch::{Change, KeyPatch, check as check_settings};
pub use record::{KeySettings, NewKey, RuntimeKey};
pub use secret::SECRET_PREFIX;
pub use store::{KeysOptions, MAX_KEYS, RuntimeKeys};
