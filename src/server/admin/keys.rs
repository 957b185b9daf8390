//! `/admin/keys`: create, list, read, change and revoke runtime keys,
//! validated against the config in force and applied on this replica
//! before the answer (other replicas follow within their notification or
//! poll delay).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use super::LiveCore;
use crate::config::KeyConfig;
use crate::engines::keys::{KeyPatch, KeySettings, KeyStoreError, RuntimeKey, RuntimeKeys};
use crate::vocab::error::{GatewayError, error_body, json_response, set_retry_after};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Deadline for the whole request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct KeysAdmin {
    keys: Arc<RuntimeKeys>,
    core: Arc<dyn LiveCore>,
}

/// The five routes, validated against the config in force and applied
/// here before they answer.
pub fn routes(core: Arc<dyn LiveCore>, keys: Arc<RuntimeKeys>) -> Router {
    let admin = KeysAdmin {
        keys: keys.clone(),
        core: core.clone(),
    };
    Router::new()
        .route("/admin/keys", get(list).post(create))
        .route("/admin/keys/{id}", get(read).patch(update).delete(revoke))
        .with_state(admin.clone())
        .layer(from_fn_with_state(admin, apply_now))
}

/// A write that succeeded is in force on this replica before it answers.
async fn apply_now(State(admin): State<KeysAdmin>, request: Request, next: Next) -> Response {
    let writes = request.method() != http::Method::GET;
    let response = next.run(request).await;
    if writes && response.status().is_success() {
        admin.core.apply_keys(admin.keys.clone()).await;
    }
    response
}

impl KeysAdmin {
    /// Runs the validator on the live runtime set with `candidate` in
    /// place of (or beside) the key of its id.
    fn check(&self, candidate: &RuntimeKey) -> Result<(), KeyStoreError> {
        let set: Vec<KeyConfig> = self
            .keys
            .current()
            .iter()
            .filter(|key| key.id != candidate.id)
            .chain(std::iter::once(candidate))
            .map(RuntimeKey::to_config)
            .collect();
        self.core.check_keys(&set).map_err(KeyStoreError::Rejected)
    }
}

/// A key as the API shows it: never the secret or its digest.
#[derive(Serialize)]
struct KeyView<'a> {
    object: &'static str,
    id: &'a str,
    name: &'a str,
    /// `sk-sluice-...` and the secret's last four characters.
    key_hint: String,
    #[serde(flatten)]
    settings: &'a KeySettings,
    created_at: i64,
    updated_at: i64,
}

fn view(key: &RuntimeKey) -> KeyView<'_> {
    KeyView {
        object: "key",
        id: &key.id,
        name: &key.name,
        key_hint: format!("{}...{}", crate::engines::keys::SECRET_PREFIX, key.hint),
        settings: &key.settings,
        created_at: key.created_at,
        updated_at: key.updated_at,
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(status, Bytes::from(body)),
        Err(_) => GatewayError::Internal.into_response(),
    }
}

fn error(status: StatusCode, message: &str, param: Option<&str>, code: &str) -> Response {
    json_response(
        status,
        error_body(message, "invalid_request_error", param, Some(code)),
    )
}

fn store_error(failure: KeyStoreError) -> Response {
    let message = failure.to_string();
    match failure {
        KeyStoreError::NotFound(_) => error(StatusCode::NOT_FOUND, &message, None, "not_found"),
        KeyStoreError::DuplicateName(_) => error(
            StatusCode::CONFLICT,
            &message,
            Some("name"),
            "duplicate_name",
        ),
        KeyStoreError::Conflict(_) => error(StatusCode::CONFLICT, &message, None, "conflict"),
        KeyStoreError::Invalid { param, .. } => error(
            StatusCode::BAD_REQUEST,
            &message,
            param.as_deref(),
            "invalid_value",
        ),
        KeyStoreError::Rejected(_) => error(
            StatusCode::BAD_REQUEST,
            &message,
            None,
            "invalid_key_config",
        ),
        KeyStoreError::Full(_) => error(StatusCode::BAD_REQUEST, &message, None, "too_many_keys"),
        KeyStoreError::Unavailable(_) | KeyStoreError::Open(_) => {
            // Logged, not returned: it may name hosts.
            tracing::warn!(error = %message, "admin keys call failed: the keys store is unreachable");
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(
                    "The keys store is unreachable right now; please try again shortly.",
                    "server_error",
                    None,
                    Some("keys_store_unavailable"),
                ),
            );
            set_retry_after(response.headers_mut(), Duration::from_secs(5));
            response
        }
        KeyStoreError::Random(_) => {
            tracing::error!(error = %message, "admin keys call failed");
            GatewayError::Internal.into_response()
        }
    }
}

/// The body as a patch: at most `MAX_BODY_BYTES`, within `BODY_TIMEOUT`.
async fn read_patch(body: Body) -> Result<KeyPatch, Response> {
    let collect = Limited::new(body, MAX_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Err(_) => return Err(GatewayError::BodyTimeout(BODY_TIMEOUT).into_response()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            return Err(GatewayError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
            .into_response());
        }
        Ok(Err(_)) => {
            return Err(
                GatewayError::invalid("The request body could not be read.", None).into_response(),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    KeyPatch::from_json(&bytes).map_err(|e| store_error(e.into()))
}

/// `POST /admin/keys`: 201 with the key and, this once, its secret (`key`).
async fn create(State(admin): State<KeysAdmin>, body: Body) -> Response {
    let new = match read_patch(body).await.map(KeyPatch::into_new_key) {
        Ok(Ok(new)) => new,
        Ok(Err(invalid)) => return store_error(invalid.into()),
        Err(response) => return response,
    };
    match admin.keys.create(new, |key| admin.check(key)).await {
        Ok((key, secret)) => {
            #[derive(Serialize)]
            struct Created<'a> {
                #[serde(flatten)]
                view: KeyView<'a>,
                key: &'a str,
            }
            let created = Created {
                view: view(&key),
                key: &secret,
            };
            json(StatusCode::CREATED, &created)
        }
        Err(failure) => store_error(failure),
    }
}

/// The most keys one page of `GET /admin/keys` lists, and its default.
const PAGE_MAX: usize = 1000;
const PAGE_DEFAULT: usize = 100;

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/keys?after=ID&limit=N`: this replica's live runtime keys by
/// id, a page at a time (a store may hold 100,000).
async fn list(
    State(admin): State<KeysAdmin>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        let message = "after must be a key id and limit a number.";
        return error(StatusCode::BAD_REQUEST, message, None, "invalid_request");
    };
    let limit = query.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        let message = format!("limit must be between 1 and {PAGE_MAX}.");
        return error(
            StatusCode::BAD_REQUEST,
            &message,
            Some("limit"),
            "invalid_request",
        );
    }
    let keys = admin.keys.current();
    let after = query.after.as_deref().unwrap_or_default();
    let mut page: Vec<&RuntimeKey> = keys.iter().filter(|key| *key.id > *after).collect();
    page.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let has_more = page.len() > limit;
    page.truncate(limit);
    let data: Vec<KeyView<'_>> = page.iter().map(|key| view(key)).collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "object": "list",
            "data": data,
            "first_id": page.first().map(|key| &key.id),
            "last_id": page.last().map(|key| &key.id),
            "has_more": has_more,
        }),
    )
}

/// `GET /admin/keys/{id}`.
async fn read(State(admin): State<KeysAdmin>, Path(id): Path<String>) -> Response {
    let keys = admin.keys.current();
    match keys.iter().find(|key| key.id == id) {
        Some(key) => json(StatusCode::OK, &view(key)),
        None => store_error(KeyStoreError::NotFound(
            crate::util::text::clip(&id).into_owned(),
        )),
    }
}

/// `PATCH /admin/keys/{id}`: merge semantics (absent unchanged, null cleared).
async fn update(State(admin): State<KeysAdmin>, Path(id): Path<String>, body: Body) -> Response {
    let patch = match read_patch(body).await {
        Ok(patch) => patch,
        Err(response) => return response,
    };
    let check = |key: &RuntimeKey| {
        crate::engines::keys::check_settings(&key.name, &key.settings)?;
        admin.check(key)
    };
    match admin.keys.update(&id, &patch, check).await {
        Ok(key) => json(StatusCode::OK, &view(&key)),
        Err(failure) => store_error(failure),
    }
}

/// `DELETE /admin/keys/{id}`: revokes the key everywhere.
async fn revoke(State(admin): State<KeysAdmin>, Path(id): Path<String>) -> Response {
    match admin.keys.revoke(&id).await {
        Ok(()) => json(
            StatusCode::OK,
            &serde_json::json!({"object": "key.deleted", "id": id, "deleted": true}),
        ),
        Err(failure) => store_error(failure),
    }
}
