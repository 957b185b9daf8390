//! Taking a slot and keeping it for the life of a stream: the same for the
//! gateway-wide slots (the admission layer) and a deployment's own (the
//! dispatcher's attempts).

use std::sync::Arc;

use futures_util::{Stream, StreamExt};

use super::{Permit, Rejected, Scheduler};
use crate::config::Priority;
use crate::infra::metrics::Metrics;
use crate::vocab::error::GatewayError;

/// Waits for a slot of `scheduler`, observing the wait in
/// `sluice_queue_wait_seconds`. A refusal is a 503 `server_overloaded`
/// naming `what` (made only then) with the scheduler's `retry-after`.
pub async fn take_slot(
    scheduler: &Arc<Scheduler>,
    priority: Priority,
    caller: Arc<str>,
    metrics: &Metrics,
    what: impl FnOnce() -> String,
) -> Result<Permit, GatewayError> {
    let started = tokio::time::Instant::now();
    let acquired = scheduler.acquire(priority, caller).await;
    metrics
        .queue_wait
        .with_label_values(&[priority.as_str()])
        .observe(started.elapsed().as_secs_f64());
    acquired.map_err(
        |(Rejected::Full { retry_after } | Rejected::TimedOut { retry_after })| {
            GatewayError::Overloaded {
                what: what(),
                retry_after,
            }
        },
    )
}

/// The stream, holding `slot` until it ends or is dropped: a slot counts
/// work in flight, and a stream is in flight until its last chunk.
pub fn held_while_streaming<S: Stream>(stream: S, slot: Permit) -> impl Stream<Item = S::Item> {
    stream.map(move |chunk| {
        let _held = &slot;
        chunk
    })
}
