//! Every `/admin` route, in one module, all behind `[admin] token` (Bearer)
//! and absent (404) without one; on `[admin] listen` when set, else on the
//! API listener.
//!
//! | route | module | built |
//! |---|---|---|
//! | `GET /admin/deployments` | `deployments` | per snapshot |
//! | `GET /admin/overview` | `overview` | per snapshot |
//! | `GET /admin/console/` and its files (no token: they hold no data) | `console` | per snapshot |
//! | `GET /admin/usage`, `GET /admin/budgets` | `usage` | per snapshot |
//! | `GET /admin/batches`, `GET /admin/batches/{id}`, `POST /admin/batches/{id}/cancel`, `GET /admin/async`, `POST /admin/async/{id}/cancel` (with a job store) | `jobs` | per snapshot |
//! | `GET /admin/models`, `POST /admin/models/{model}/level` | `models` | per snapshot |
//! | `POST /admin/reload`, `GET /admin/config` | `config` | once, outside the snapshots |
//! | `/admin/keys`, `/admin/keys/{id}` | `keys` | once, outside the snapshots |
//!
//! The views read one snapshot's registries, so they are built with it.
//! Reload and keys must outlive any snapshot (a reload must not replace the
//! route that runs it): they are built once on the live core, which they
//! reach through [`LiveCore`], and check the token of the snapshot in force.

mod config;
mod console;
mod deployments;
mod jobs;
mod keys;
mod models;
mod overview;
mod token;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;

pub use config::{ConfigView, LiveCore, ReloadError, Reloaded};
pub use deployments::Views;
pub use token::AdminToken;

use crate::engines::degrade::Ladder;
use crate::engines::keys::RuntimeKeys;

/// `/admin/keys` and `/admin/keys/{id}` without the token check (which
/// `live_routes` adds in front of them).
pub fn keys_routes(core: Arc<dyn LiveCore>, keys: Arc<RuntimeKeys>) -> Router {
    keys::routes(core, keys)
}

/// The admin routes a config snapshot serves.
pub fn snapshot_routes(
    views: Views,
    ladder: Arc<Ladder>,
    token: AdminToken,
    metrics: crate::infra::metrics::Metrics,
) -> Router {
    Router::new()
        .route(
            "/admin/overview",
            get(overview::overview).with_state(metrics),
        )
        .route("/admin/deployments", get(deployments::deployments))
        .route("/admin/usage", get(usage::usage))
        .route("/admin/budgets", get(usage::budgets))
        .with_state(views.clone())
        .merge(models::routes(ladder))
        .merge(views.jobs.map(jobs::routes).unwrap_or_default())
        .route_layer(from_fn_with_state(token, token::require_token))
        .merge(console::routes())
}

/// The admin routes of the live core: reload, config and, with a keys
/// store, the runtime keys.
pub fn live_routes(core: Arc<dyn LiveCore>, keys: Option<Arc<RuntimeKeys>>) -> Router {
    let routes = config::routes(core.clone());
    let routes = match keys {
        Some(keys) => routes.merge(keys_routes(core.clone(), keys)),
        None => routes,
    };
    routes.route_layer(from_fn_with_state(core, config::require_token))
}
