//! The leaf vocabulary: the types the stages, the engines and the
//! dispatcher all name, and nothing else. It imports only `config` (for
//! `Priority` and prices); everything in the crate may import it.
//!
//! - `identity`: who is calling.
//! - `api`: which API a call came in by (OpenAI's or Anthropic's).
//! - `endpoint`: which OpenAI endpoint, and calls on stored objects.
//! - `resource`: the kinds of stored object, and how each is made.
//! - `degraded`: the degradation ladder's levels and a degraded call's mark.
//! - `usage`: token usage and the hooks that learn it when a call ends.
//! - `answer`: what an answer carries back out to the outer layers.
//! - `error`: `GatewayError`, every failure in OpenAI's error shape.

mod answer;
mod api;
mod degraded;
mod endpoint;
pub mod error;
mod identity;
mod resource;
mod usage;

pub use answer::{CACHE_STATUS, Hedged, ServedBy, StreamEnded, StreamOutcome, UpstreamTime};
pub use api::{Api, MessagesBody};
pub use degraded::{DEGRADED, Degraded, Level};
pub use endpoint::{Endpoint, StoredCall};
pub use identity::Identity;
pub use resource::{CHAT_COMPLETIONS, CONVERSATIONS, Creation, RESOURCES, RESPONSES, Resource};
pub use usage::{Discount, Finished, Outcome, Served, Usage, UsageHooks, UsageObserver};
