//! A binary answer (`audio/speech`) relayed as it arrives, never read whole:
//! each gap between chunks is bounded by the deployment's timeout, the
//! shutdown cut ends it, and a failure aborts the connection (the client
//! sees a truncated body, not bytes of an error spliced into its audio).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::upstream::BodyStream;
use crate::util::shutdown::Cut;
use crate::vocab::{Outcome, Usage, UsageHooks};

pub struct Passthrough {
    body: BodyStream,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    cut: Cut,
    /// Finished once, when the body ends either way.
    hooks: Option<UsageHooks>,
}

impl Passthrough {
    pub fn new(body: BodyStream, idle_timeout: Duration, cut: Cut, hooks: UsageHooks) -> Self {
        Self {
            body,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            cut,
            hooks: Some(hooks),
        }
    }

    /// Binary answers report no tokens: the call is metered at 0.
    fn end(&mut self, error: Option<String>) -> Poll<Option<std::io::Result<Bytes>>> {
        if let Some(hooks) = self.hooks.take() {
            hooks.finish(Outcome::Reported(Usage::default()));
        }
        Poll::Ready(error.map(|reason| Err(std::io::Error::other(reason))))
    }
}

impl Stream for Passthrough {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.hooks.is_none() {
            return Poll::Ready(None);
        }
        if this.cut.is_fired() {
            return this.end(Some("the gateway is shutting down".into()));
        }
        match this.body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let deadline = Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => this.end(Some(error.to_string())),
            Poll::Ready(None) => this.end(None),
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => this.end(Some("the upstream went idle".into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn chunks_pass_and_an_idle_upstream_aborts() {
        let body = futures_util::stream::iter([Ok(Bytes::from_static(b"ID3"))])
            .chain(futures_util::stream::pending())
            .boxed();
        let relay = Passthrough::new(
            body,
            Duration::from_secs(5),
            Cut::default(),
            UsageHooks::default(),
        );
        let items: Vec<_> = relay.collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap(), "ID3");
        assert!(items[1].is_err());
    }
}
