//! Leaf helpers with no imports of Sluice's own: owned tasks, shutdown
//! signals, header names, Go-style durations, quoting client input, and
//! draining a refused request's body.

pub mod drain;
pub mod go_duration;
pub mod headers;
pub mod shutdown;
pub mod tasks;
pub mod text;
