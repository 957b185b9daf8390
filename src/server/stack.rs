//! The request path, in one place. Outermost first:
//!
//! | # | layer                | scope | what it does                                             |
//! |---|----------------------|-------|----------------------------------------------------------|
//! | 1 | `CatchPanicLayer`    | all   | a panic anywhere becomes an OpenAI-shaped 500            |
//! | 2 | `SetRequestIdLayer`  | all   | keeps the client's `x-request-id`, or makes one          |
//! | 3 | `PropagateRequestId` | all   | echoes `x-request-id` on the response                    |
//! | 4 | `access_log`         | all   | one log line per request: id, key, model, deployment...  |
//! | 5 | `authenticate`       | /v1   | virtual key -> `Identity`; 401 before anything else runs |
//! |   | (limits, budgets, cache, queue slot in here, after auth) |   |                          |
//! | - | `Dispatcher`         | /v1   | model -> deployment -> upstream, relays the answer       |

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{MethodRouter, get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

use super::{access_log, fallback, health, request_id::RequestIds};
use crate::auth::{self, KeyStore};
use crate::dispatch::{self, Dispatcher};
use crate::upstream::Endpoint;

pub fn app(dispatcher: Arc<Dispatcher>, keys: Arc<KeyStore>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", proxy_to(Endpoint::ChatCompletions))
        .route("/v1/completions", proxy_to(Endpoint::Completions))
        .route("/v1/embeddings", proxy_to(Endpoint::Embeddings))
        .route("/v1/responses", proxy_to(Endpoint::Responses))
        .route("/v1/models", get(dispatch::list_models))
        .route("/v1/models/{model}", get(dispatch::get_model))
        .route_layer(
            ServiceBuilder::new().layer(from_fn_with_state(keys, auth::authenticate)), // 5
        )
        .with_state(dispatcher.clone());

    Router::new()
        .merge(api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz).with_state(dispatcher))
        .fallback(fallback::unknown_route)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(fallback::panic_response)) // 1
                .layer(SetRequestIdLayer::x_request_id(RequestIds)) // 2
                .layer(PropagateRequestIdLayer::x_request_id()) // 3
                .layer(from_fn(access_log::access_log)), // 4
        )
}

/// A POST route whose requests the dispatcher proxies to `endpoint`.
fn proxy_to(endpoint: Endpoint) -> MethodRouter<Arc<Dispatcher>> {
    post(
        move |State(dispatcher): State<Arc<Dispatcher>>, request: Request| {
            dispatcher.handle(endpoint, request)
        },
    )
}
