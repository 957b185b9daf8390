//! A stream rewritten event by event: each whole event (as `Splitter`
//! cuts it) handed to a `Rewriter`, whose output goes on as soon as an
//! event yields any. What the two API translations share (the Messages
//! adapter's and the Anthropic deployment's).

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Event, Piece, Splitter};

/// What turns one stream's events into another's.
pub trait Rewriter {
    /// One whole event, read by the grammar; `raw` as it came.
    fn event(&mut self, event: &Event<'_>, raw: &[u8], out: &mut Vec<u8>);
    /// An event longer than the splitter's limit (never read).
    fn too_long(&mut self, out: &mut Vec<u8>);
    /// The stream broke: whether the break goes on to the reader (after
    /// `out`) or the rewriter has ended the stream itself.
    fn broke(&mut self, out: &mut Vec<u8>) -> bool;
    /// The stream's last byte came.
    fn end(&mut self, out: &mut Vec<u8>);
    /// Nothing follows: the rewritten stream ends here.
    fn is_closed(&self) -> bool;
}

/// `body` rewritten by `rewriter`, events read up to `limit` bytes.
pub fn rewrite<E, R>(
    body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    limit: usize,
    rewriter: R,
) -> impl Stream<Item = Result<Bytes, E>>
where
    R: Rewriter,
{
    let state = (body, Splitter::new(limit), rewriter);
    futures_util::stream::unfold(Some(state), |state| async move {
        let (mut body, mut splitter, mut rewriter) = state?;
        loop {
            let mut out = Vec::new();
            let mut broken = None;
            let mut ended = false;
            match body.next().await {
                Some(Ok(chunk)) => splitter.feed(&chunk, |piece| match piece {
                    Piece::Event(raw) => rewriter.event(&Event::parse(raw), raw, &mut out),
                    Piece::Tail(_) => {}
                    _ => rewriter.too_long(&mut out),
                }),
                Some(Err(error)) => {
                    if rewriter.broke(&mut out) {
                        broken = Some(error);
                    }
                }
                None => {
                    if let Some(rest) = splitter.finish() {
                        rewriter.event(&Event::parse(&rest), &rest, &mut out);
                    }
                    rewriter.end(&mut out);
                    ended = true;
                }
            }
            // A body is not polled past its end, whatever the rewriter says.
            let closed = broken.is_some() || ended || rewriter.is_closed();
            if out.is_empty() && !closed {
                continue;
            }
            let mut items = Vec::with_capacity(2);
            if !out.is_empty() {
                items.push(Ok(Bytes::from(out)));
            }
            items.extend(broken.map(Err));
            let next = (!closed).then_some((body, splitter, rewriter));
            return Some((futures_util::stream::iter(items), next));
        }
    })
    .flatten()
}
