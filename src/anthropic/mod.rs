//! Anthropic's Messages API, spoken on the way in: a Messages request read
//! and translated to a chat completion (`request`), and the chat
//! completion's answer translated back, whole (`response`) or event by
//! event (`stream`), with errors in Anthropic's shape (`error`).
//!
//! `provider` is the other direction: a chat call sent to an Anthropic
//! deployment (`provider = "anthropic"`), and its answer read back.
//!
//! The translation is plain data to plain data: no I/O, no state beyond
//! one stream's. The HTTP adapter (`server::messages`) runs the translated
//! call through the same stages as any chat completion, so keys, limits,
//! budgets, the cache, degradation, priority and the ledger all apply.
//!
//! What a chat completion cannot express is refused with a 400 naming the
//! field, never dropped: `top_k`, extended `thinking`, server tools,
//! documents, files. `cache_control` marks are accepted and have no effect
//! (the upstream's own prompt caching applies). A call for a model an
//! Anthropic deployment serves is relayed to it as it came instead, so
//! those fields work there; `relay` is what the stages read of such a call
//! when it has no chat translation.

mod error;
pub mod provider;
mod relay;
mod request;
mod response;
#[cfg(test)]
mod round_trip;
mod stream;

pub use error::{error_body, error_type, status_for};
pub use relay::estimate_view;
pub use request::{ChatRequest, Refused, chat_of, to_chat};
pub use response::to_message;
pub use stream::StreamTranslator;
