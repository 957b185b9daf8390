//! Asynchronous requests (being written).

use std::sync::Arc;

use super::Jobs;

pub fn start(_jobs: &Arc<Jobs>) {}
