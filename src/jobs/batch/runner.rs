//! The batch runner (being written).

use std::sync::Arc;

use super::super::Jobs;

pub fn start(_jobs: &Arc<Jobs>) {}
