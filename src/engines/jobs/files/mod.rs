//! The Files API: records in the job store, bytes on disk.

pub mod api;
mod store;

pub use store::{FilePage, FileRecord, Files, NewFile, Upload};
