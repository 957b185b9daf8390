//! The commands besides `run`: `check` (validate a config and summarise
//! it) and `healthcheck` (ask the gateway on this host whether it is ready).

pub mod check;
pub mod healthcheck;
