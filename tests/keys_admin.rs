//! `/admin/keys` handlers over a real SQLite store, called through their
//! router (the token check in front of them is the server's).
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice::config::KeyConfig;
use sluice::config::{KeysStoreSpec, sha256};
use sluice::engines::keys::{KeysOptions, RuntimeKeys};
use sluice::server::admin::{AdminToken, ConfigView, LiveCore, ReloadError, Reloaded, keys_routes};
use tower::ServiceExt;

/// The live core as far as the keys routes need one: refuses models other
/// than `gpt-4o`, as the gateway's validation would refuse models no
/// deployment serves.
struct Core;

impl LiveCore for Core {
    fn admin_token(&self) -> Option<AdminToken> {
        None
    }

    fn reload(&self) -> BoxFuture<'_, Result<Reloaded, ReloadError>> {
        async { Err(ReloadError::NoFile) }.boxed()
    }

    fn config_view(&self) -> ConfigView {
        ConfigView {
            hash: String::new(),
            loaded_at: 0,
            runtime_keys: 0,
            redacted: Value::Null,
        }
    }

    fn check_keys(&self, keys: &[KeyConfig]) -> Result<(), String> {
        for (index, key) in keys.iter().enumerate() {
            for model in key.models.iter().flatten() {
                if model != "gpt-4o" {
                    return Err(format!(
                        "keys[{index}].models: `{model}` is not served by any deployment"
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_keys(&self, _keys: Arc<RuntimeKeys>) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

/// The keys routes over a fresh SQLite store, and the store.
struct Admin {
    routes: axum::Router,
    keys: Arc<RuntimeKeys>,
}

async fn admin() -> Admin {
    let dir = std::env::temp_dir().join(format!("sluice-keys-admin-{}", fastrand::u64(..)));
    let spec = KeysStoreSpec::Sqlite(dir.join("keys.sqlite"));
    let options = KeysOptions {
        poll_interval: Duration::from_secs(2),
        notifications: true,
    };
    let keys = RuntimeKeys::open(&spec, options, &sluice::util::tasks::Tasks::new())
        .await
        .unwrap();
    let keys = Arc::new(keys);
    Admin {
        routes: keys_routes(Arc::new(Core), keys.clone()),
        keys,
    }
}

async fn call(
    admin: &Admin,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    call_raw(admin, method, path, body).await
}

async fn call_raw(admin: &Admin, method: Method, path: &str, body: Body) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = admin.routes.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

fn assert_error(body: &Value, param: Option<&str>, code: &str) {
    let error = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "{field} missing: {body}");
    }
    assert_eq!(error["param"].as_str(), param, "{body}");
    assert_eq!(error["code"], code, "{body}");
}

#[tokio::test]
async fn a_key_is_created_once_with_its_secret_then_listed_without_it() {
    let admin = admin().await;
    let (status, created) = call(
        &admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "team-a", "rpm": 60, "models": ["gpt-4o"], "priority": "batch", "budget_daily_usd": 5.0})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-sluice-"));
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key_"));
    assert_eq!(created["rpm"], 60);
    assert_eq!(created["priority"], "batch");
    assert_eq!(created["cache"], true);
    assert_eq!(
        created["key_hint"],
        format!("sk-sluice-...{}", &secret[secret.len() - 4..])
    );

    let digest = hex::encode(sha256(&secret));
    for path in ["/admin/keys".to_owned(), format!("/admin/keys/{id}")] {
        let (status, body) = call(&admin, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        let text = body.to_string();
        assert!(!text.contains(&secret) && !text.contains(&digest), "{text}");
        let records = body["data"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![body.clone()]);
        assert!(records.iter().all(|r| r.get("key").is_none()), "{text}");
    }
    let (_, list) = call(&admin, Method::GET, "/admin/keys", None).await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id.as_str());

    // What the gateway will merge in resolves by the secret.
    let config = admin.keys.current()[0].to_config();
    assert_eq!(config.digest(), Some(sha256(&secret)));
}

/// The list comes a page at a time, by id, every key once.
#[tokio::test]
async fn keys_are_listed_a_page_at_a_time() {
    let admin = admin().await;
    let mut made = std::collections::BTreeSet::new();
    for n in 0..5 {
        let body = json!({ "name": format!("team-{n}") });
        let (status, created) = call(&admin, Method::POST, "/admin/keys", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED);
        made.insert(created["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/admin/keys?limit=2".to_owned();
    loop {
        let (status, page) = call(&admin, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(ids.len() <= 2);
        assert_eq!(page["last_id"].as_str(), ids.last().map(String::as_str));
        seen.extend(ids);
        if page["has_more"] == false {
            break;
        }
        path = format!(
            "/admin/keys?limit=2&after={}",
            page["last_id"].as_str().unwrap()
        );
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "{seen:?}");
    assert_eq!(
        seen.into_iter().collect::<std::collections::BTreeSet<_>>(),
        made
    );
    for bad in ["limit=0", "limit=1001", "limit=many"] {
        let (status, _) = call(&admin, Method::GET, &format!("/admin/keys?{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field() {
    let admin = admin().await;
    let cases = [
        (json!({"rpm": 1}), Some("name")),
        (json!({"name": "a", "secret": "x"}), Some("secret")),
        (json!({"name": "a", "rpm": "many"}), Some("rpm")),
        (json!({"name": "a", "rpm": 0}), Some("rpm")),
        (
            json!({"name": "a", "max_priority": "urgent"}),
            Some("max_priority"),
        ),
        (
            json!({"name": "a", "budget_monthly_usd": 0}),
            Some("budget_monthly_usd"),
        ),
        (json!(["not", "an", "object"]), None),
    ];
    for (body, param) in cases {
        let (status, error) = call(&admin, Method::POST, "/admin/keys", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&error, param, "invalid_value");
    }
    let (status, error) = call_raw(
        &admin,
        Method::POST,
        "/admin/keys",
        Body::from("{\"name\":"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&error, None, "invalid_value");
    assert!(admin.keys.current().is_empty());
}

#[tokio::test]
async fn the_gateway_validator_is_asked_before_anything_is_stored() {
    let admin = admin().await;
    let (status, error) = call(
        &admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "a", "models": ["gpt-9"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&error, None, "invalid_key_config");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-9")
    );
    assert!(admin.keys.current().is_empty());

    let (_, created) = call(
        &admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "a"})),
    )
    .await;
    let path = format!("/admin/keys/{}", created["id"].as_str().unwrap());
    let (status, _) = call(
        &admin,
        Method::PATCH,
        &path,
        Some(json!({"models": ["gpt-9"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(admin.keys.current()[0].settings.models, None, "unchanged");
}

#[tokio::test]
async fn patch_merges_delete_revokes_and_unknown_ids_are_404() {
    let admin = admin().await;
    let (_, created) = call(
        &admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "a", "rpm": 10, "tpm": 100, "org": "eng"})),
    )
    .await;
    let path = format!("/admin/keys/{}", created["id"].as_str().unwrap());
    let (status, patched) = call(
        &admin,
        Method::PATCH,
        &path,
        Some(json!({"tpm": null, "rpm": 20, "cache": false, "name": "a2"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["rpm"], 20);
    assert_eq!(patched["tpm"], Value::Null);
    assert_eq!(patched["org"], "eng");
    assert_eq!(patched["cache"], false);
    assert_eq!(patched["name"], "a2");
    assert!(patched.get("key").is_none());

    let (status, error) = call(&admin, Method::PATCH, &path, Some(json!({"rpm": 0}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&error, Some("rpm"), "invalid_value");

    let (status, deleted) = call(&admin, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["id"], created["id"]);
    for method in [Method::GET, Method::DELETE] {
        let (status, error) = call(&admin, method, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_error(&error, None, "not_found");
    }
    let (status, _) = call(&admin, Method::PATCH, &path, Some(json!({"rpm": 1}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn duplicate_names_are_409() {
    let admin = admin().await;
    for name in ["a", "b"] {
        let (status, _) = call(
            &admin,
            Method::POST,
            "/admin/keys",
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, error) = call(
        &admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "a"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&error, Some("name"), "duplicate_name");
    let b = admin
        .keys
        .current()
        .iter()
        .find(|k| k.name == "b")
        .unwrap()
        .id
        .clone();
    let (status, error) = call(
        &admin,
        Method::PATCH,
        &format!("/admin/keys/{b}"),
        Some(json!({"name": "a"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&error, Some("name"), "duplicate_name");
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused() {
    let admin = admin().await;
    let big = json!({"name": "a", "org": "x".repeat(70 * 1024)});
    let (status, error) = call(&admin, Method::POST, "/admin/keys", Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["error"]["code"], "request_too_large");
    assert!(admin.keys.current().is_empty());
}
