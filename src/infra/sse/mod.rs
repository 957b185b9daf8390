//! The event-stream grammar (WHATWG HTML, "Server-sent events"), for
//! everything that decides what a relayed stream says: usage scanning, usage
//! hiding, cache recording and replay. Upstreams spell the same stream in
//! several legal ways (`\n`, `\r\n` or `\r` line ends, `data:` with or
//! without a space, several `data:` lines per event, `:` comments, any JSON
//! whitespace), so nothing here matches one spelling's bytes.
//!
//! - `split`: cuts a chunked byte stream into whole events, bounded, without
//!   copying events that arrive inside one chunk.
//! - `event`: reads one event's fields and rebuilds it with new data.
//! - `json`: finds and removes a top-level member of a JSON object without
//!   re-serialising the rest.
//! - `usage`: the token usage an answer reports, in a body or a stream.
//! - `rewrite`: a stream rewritten event by event (the API translations).

mod event;
pub mod json;
mod rewrite;
mod split;
pub mod usage;

pub use event::{Event, with_data};
pub use rewrite::{Rewriter, rewrite};
pub use split::{Piece, Splitter, as_own_event, ends_event, only_comments};
