//! The request as the request stage read it, for the stages behind it.

use std::sync::Arc;

use bytes::Bytes;

use super::Priority;
use crate::engines::routing::ModelRoute;
use crate::engines::tokens::BodyView;
use crate::vocab::{Endpoint, StoredCall};

/// A proxied call as the layers behind the request layer see it.
#[derive(Clone)]
pub struct ApiRequest {
    pub endpoint: Endpoint,
    /// The client's bytes, forwarded as received (or as a policy rewrote them).
    pub body: Bytes,
    /// `body` parsed once, for every stage that reads its fields.
    pub view: Arc<BodyView>,
    /// The model the client asked for (perhaps a virtual one).
    pub requested: Arc<str>,
    pub route: Arc<ModelRoute>,
    pub stream: bool,
    /// `store: true` on a chat completion: its id is pinned.
    pub store: bool,
    /// Hash of the prompt's identity, for `prefix_affinity` routing.
    pub affinity: Option<u64>,
    /// The request's class in the admission queues.
    pub priority: Priority,
    /// When the gateway started reading it (time to first token counts from here).
    pub received: tokio::time::Instant,
    /// The client did not ask for streamed usage but the upstream will send
    /// it (Sluice asked): the relay hides it again.
    pub hide_usage: bool,
    /// The client asked for streamed usage (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The client's content type when the body is an upload, not JSON.
    pub content_type: Option<http::HeaderValue>,
    /// Set for calls on a stored response (routed by its id).
    pub stored: Option<StoredCall>,
}

impl ApiRequest {
    /// A call whose body the stages need not read (a call on a stored
    /// object, a Realtime session): no stream, no usage splice, no
    /// affinity; `body` forwarded as it is.
    pub fn plain(
        endpoint: Endpoint,
        body: Bytes,
        route: Arc<ModelRoute>,
        requested: Arc<str>,
        (priority, received): (Priority, tokio::time::Instant),
    ) -> Self {
        Self {
            endpoint,
            view: BodyView::opaque(endpoint, body.len()),
            body,
            requested,
            route,
            stream: false,
            store: false,
            affinity: None,
            priority,
            received,
            hide_usage: false,
            include_usage: false,
            content_type: None,
            stored: None,
        }
    }
}
