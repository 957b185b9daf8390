//! Uploads: a large file sent in parts, joined into Sluice's Files store.

pub mod api;
mod store;
