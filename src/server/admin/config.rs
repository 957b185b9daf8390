//! `POST /admin/reload` and `GET /admin/config`, and what every admin route
//! outside the snapshots asks of the live core.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::future::BoxFuture;
use http::StatusCode;
use serde_json::json;

use super::AdminToken;
use super::token::check_token;
use crate::config::{ConfigError, KeyConfig};
use crate::engines::keys::RuntimeKeys;
use crate::server::fallback::unknown_route;
use crate::vocab::error::{GatewayError, error_body, json_response};

/// The longest reload error shown: a config with many problems lists them
/// all in the log; the answer keeps the first few kilobytes.
const MAX_ERROR_TEXT: usize = 4096;

/// What the admin routes outside the snapshots ask of the live core.
pub trait LiveCore: Send + Sync + 'static {
    /// The admin token of the snapshot in force (`None`: no admin API).
    fn admin_token(&self) -> Option<AdminToken>;
    /// Reloads the config file, as SIGHUP does.
    fn reload(&self) -> BoxFuture<'_, Result<Reloaded, ReloadError>>;
    /// The config in force, redacted, for `GET /admin/config`.
    fn config_view(&self) -> ConfigView;
    /// Whether the config in force accepts `keys` as its runtime keys.
    fn check_keys(&self, keys: &[KeyConfig]) -> Result<(), String>;
    /// Puts `keys`' set in force now (after a write through this replica).
    fn apply_keys(&self, keys: Arc<RuntimeKeys>) -> BoxFuture<'_, ()>;
}

/// What `GET /admin/config` shows.
pub struct ConfigView {
    pub hash: String,
    /// Unix seconds.
    pub loaded_at: u64,
    pub runtime_keys: usize,
    pub redacted: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload: the gateway was started from a config in memory")]
    NoFile,
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The merged config (file and runtime keys) fails validation.
    #[error("{0}")]
    Invalid(String),
    #[error("reading the config file timed out or failed")]
    Read,
}

/// What a successful reload did.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    /// The hash of the file's config now in force.
    pub hash: String,
    /// `false` when the config was the same as the running one.
    pub changed: bool,
    /// Settings that changed but take effect at the next restart.
    pub restart_required: Vec<&'static str>,
}

pub fn routes(core: Arc<dyn LiveCore>) -> Router {
    Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/config", get(config))
        .with_state(core)
}

/// The token check of the routes outside the snapshots: the token in force.
pub async fn require_token(
    State(core): State<Arc<dyn LiveCore>>,
    request: Request,
    next: Next,
) -> Response {
    match core.admin_token() {
        Some(token) => check_token(&token, request, next).await,
        None => unknown_route(request).await,
    }
}

async fn reload(State(core): State<Arc<dyn LiveCore>>) -> Response {
    match core.reload().await {
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
                message.truncate(crate::util::text::prefix(&message, MAX_ERROR_TEXT).len());
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

async fn config(State(core): State<Arc<dyn LiveCore>>) -> Response {
    let view = core.config_view();
    let body = json!({
        "object": "config",
        "hash": view.hash,
        "loaded_at": view.loaded_at,
        "runtime_keys": view.runtime_keys,
        "config": view.redacted,
    });
    json_response(StatusCode::OK, body.to_string().into())
}
