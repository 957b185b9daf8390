//! Test harness: a socket-level fake upstream that records what it received
//! and misbehaves on demand, and an in-process gateway in front of it.
#![allow(dead_code, reason = "shared by tests that each use part of it")]

pub mod batch_api;
pub mod fake_upstream;
pub mod gateway;
pub mod hidden;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod spelling;
pub mod tailed;

#[allow(unused_imports, reason = "not every test uses every re-export")]
pub use fake_upstream::{Behavior, FakeUpstream};
#[allow(unused_imports, reason = "not every test uses every re-export")]
pub use gateway::TestGateway;
