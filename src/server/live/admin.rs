//! The admin routes about the live core itself: `POST /admin/reload`,
//! `GET /admin/config` and the runtime keys (`/admin/keys`). They live outside the snapshots (a reload must not
//! replace the route that runs it) and check the admin token of the snapshot
//! in force; with no token configured they do not exist (404).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::json;

use super::{Live, ReloadError};
use crate::error::{GatewayError, error_body, json_response};
use crate::keys::RuntimeKeys;
use crate::server::admin::check_token;
use crate::server::fallback::unknown_route;

/// The longest reload error shown: a config with many problems lists them
/// all in the log; the answer keeps the first few kilobytes.
const MAX_ERROR_TEXT: usize = 4096;

/// With a keys store, `/admin/keys` too (see `keys`).
pub fn routes(live: &Arc<Live>, keys: Option<Arc<RuntimeKeys>>) -> Router {
    let core = Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/config", get(config))
        .with_state(live.clone());
    let keys = keys.map_or_else(Router::new, |keys| super::keys::routes(live, keys));
    core.merge(keys)
        .route_layer(from_fn_with_state(live.clone(), require_token))
}

async fn require_token(State(live): State<Arc<Live>>, request: Request, next: Next) -> Response {
    match live.snapshot().admin.clone() {
        Some(token) => check_token(&token, request, next).await,
        None => unknown_route(request).await,
    }
}

async fn reload(State(live): State<Arc<Live>>) -> Response {
    match live.reload_file("admin").await {
        Ok(reloaded) => {
            let body = json!({"object": "config.reload", "status": "ok", "hash": reloaded.hash,
                "changed": reloaded.changed, "restart_required": reloaded.restart_required});
            json_response(StatusCode::OK, body.to_string().into())
        }
        Err(ReloadError::NoFile) => GatewayError::invalid(
            "This gateway was started without a config file; there is nothing to reload.",
            None,
        )
        .into_response(),
        Err(ReloadError::Read) => {
            let body = error_body(
                "The config file could not be read in time; the running config stays in force. Try again.",
                "server_error",
                None,
                Some("config_unreadable"),
            );
            json_response(StatusCode::SERVICE_UNAVAILABLE, body)
        }
        Err(error) => {
            let mut message =
                format!("The config was not reloaded; the running one stays in force. {error}");
            if message.len() > MAX_ERROR_TEXT {
                let mut end = MAX_ERROR_TEXT;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
                message.push_str(" (cut)");
            }
            let body = error_body(
                &message,
                "invalid_request_error",
                None,
                Some("invalid_config"),
            );
            json_response(StatusCode::UNPROCESSABLE_ENTITY, body)
        }
    }
}

async fn config(State(live): State<Arc<Live>>) -> Response {
    let snapshot = live.snapshot();
    let loaded_at = snapshot
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let runtime_keys = snapshot.config.keys.len() - snapshot.file.keys.len();
    let body = json!({
        "object": "config",
        "hash": snapshot.file.view.hash,
        "loaded_at": loaded_at,
        "runtime_keys": runtime_keys,
        "config": snapshot.file.view.redacted,
    });
    json_response(StatusCode::OK, body.to_string().into())
}
