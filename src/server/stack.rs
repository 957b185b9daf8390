//! The request path, in one place. Outermost first:
//!
//! | # | layer                | scope | what it does                                              |
//! |---|----------------------|-------|-----------------------------------------------------------|
//! | 1 | `CatchPanicLayer`    | all   | a panic anywhere becomes an OpenAI-shaped 500             |
//! | 2 | `RequestIds`         | all   | keeps a short client `x-request-id`, or makes one; answers with it |
//! | 3 | `cors`               | api   | `[server] cors_origins`: preflights, allow/expose headers  |
//! | 3b| `compression`        | all   | large JSON answers gzip/br/zstd per `Accept-Encoding`      |
//! | 4 | `access_log`         | all   | one log line per request (a stream's at its end); the call's OpenTelemetry span |
//! | 4b| `record`             | all   | request counts, durations, overhead, in-flight (metrics)  |
//! | 4c| `CheckEncoding`      | all   | unknown `Content-Encoding` -> 415; known ones spelled for 4d |
//! | 4d| `RequestDecompression`| all  | gzip/deflate/br/zstd bodies decoded as they are read      |
//! | 5 | `Entry`              | /v1   | virtual key -> `Identity` -> a `Call`; 401 before anything else runs |
//! |   |                      |       | (/v1 here stands for every API root: `/openai/...` too)   |
//! | 5b| `AsyncIntake`        | /v1   | `Prefer: respond-async` POSTs: recorded as a job, 202 at once |
//! | 6 | `RequestReader`      | /v1   | body, JSON, model and allow-list checked once -> `ApiRequest` |
//! | 6b| `RecordUsage`        | /v1   | one usage record per request, queued for batched writes   |
//! | 6c| `CheckLevel`         | /v1   | the model's degradation level: 503 at 4 (or 202 job for `queue_in_maintenance` keys); marks the call at 2-3 |
//! | 7 | `Cache`              | /v1   | exact response cache and coalescing; a hit skips the rest |
//! | 7a| `Fallback`           | /v1   | a degraded call the cache missed: static answer or 503    |
//! | 7b| `EnforceBudgets`     | /v1   | spend budgets per key and org: 429 when spent; bills usage |
//! | 8 | `RateLimit`          | /v1   | RPM/TPM per key, org, model; picks a deployment with quota |
//! | 9 | `Admit`              | /v1   | `[server] max_concurrency` slots; fair priority queue      |
//! | - | `Dispatcher`         | /v1   | deployment -> upstream, relays the answer, reports usage  |
//!
//! Layers 1 to 4d wrap each listener for the process's life; layers 5 to 9
//! and the dispatcher are built per config snapshot (`server::live`), and a
//! call runs on the snapshot in force when it arrives. Layers 5 to 9 are
//! stages (`crate::stage`), run as one chain; what each reads from and adds
//! to the call is in `crate::call`. The internal adapter enters at layer 5.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use super::admin::{self, AdminToken};
use super::{
    access_log, cors::CorsLayer, encoding, fallback, health, record, request_id::RequestIds,
};
use crate::dispatch::{self, Dispatcher};
use crate::engines::auth::{AuthGuard, Authenticate, KeyStore};
use crate::engines::cache::ResponseCache;
use crate::engines::degrade::Ladder;
use crate::engines::jobs::Jobs;
use crate::engines::limits::Limiter;
use crate::engines::metering::Budgets;
use crate::engines::queue::Scheduler;
use crate::infra::metrics::Metrics;
use crate::infra::sync_layer::SyncLayer;
use crate::stages::{
    Admit, AsyncIntake, Cache, CheckLevel, EnforceBudgets, Entry, Fallback, JobOwner, RateLimit,
    RecordUsage, RequestReader, StageLayer, chain,
};
use crate::vocab::{Endpoint, RESOURCES};
use tower_http::decompression::RequestDecompressionLayer;

/// Everything one config snapshot's layers and dispatcher share.
pub struct Services {
    pub dispatcher: Arc<Dispatcher>,
    pub keys: Arc<KeyStore>,
    /// The throttle of failed authentication, for the API and admin routes.
    pub guard: AuthGuard,
    pub reader: Arc<RequestReader>,
    pub limiter: Option<Arc<Limiter>>,
    pub cache: Option<Arc<ResponseCache>>,
    /// `[server] max_concurrency` slots, when set.
    pub admission: Option<Arc<Scheduler>>,
    /// The usage ledger's layer, when a store is configured.
    pub ledger: Option<RecordUsage>,
    /// Spend budgets, when any is set.
    pub budgets: Option<Arc<Budgets>>,
    pub metrics: Metrics,
    /// The admin API exists only when a token is configured.
    pub admin: Option<AdminToken>,
    /// Files, batches and asynchronous jobs, when `[batch] store` is set.
    pub jobs: Option<Arc<Jobs>>,
    /// Layer 5b, when jobs are stored and `[async_requests] enabled`.
    pub async_intake: Option<Arc<AsyncIntake>>,
    /// The degradation ladder (layers 6c and 7a, `/admin/models`).
    pub ladder: Arc<Ladder>,
    /// Raised at shutdown: `/readyz` answers 503.
    pub draining: crate::util::shutdown::Draining,
    /// Raised when start-up loading is done: `/readyz` answers 503 before.
    pub warmed: crate::util::shutdown::Warmed,
}

/// Layers 5 to 9 and the dispatcher, in front of the API routes. `entry`
/// is layer 5: authentication for HTTP calls, or the internal adapter's
/// check that the caller's identity is already attached. `intake` (5b) is
/// the HTTP chain's only: a replayed job must not be taken for a new one.
fn api(services: &Services, entry: Entry, intake: Option<Arc<AsyncIntake>>) -> Router {
    let stages = chain![
        entry,                   // 5
        intake.clone(),          // 5b
        services.reader.clone(), // 6
        services.ledger.clone(), // 6b
        CheckLevel {
            ladder: services.ladder.clone(),
            intake,
        }, // 6c
        services.cache.clone().map(Cache), // 7
        Fallback(services.ladder.clone()), // 7a
        services.budgets.clone().map(EnforceBudgets), // 7b
        services.limiter.clone().map(RateLimit), // 8
        services.admission.clone().map(|scheduler| Admit {
            scheduler,
            metrics: services.metrics.clone(),
        }), // 9
    ];
    api_routes()
        .route_layer(StageLayer(Arc::new(stages)))
        .with_state(services.dispatcher.clone())
}

/// The Files, Uploads and Batch APIs under each OpenAI root, and the polling of
/// asynchronous jobs: layer 5 only (who
/// calls); the lines a batch runs go through the whole chain later, by the
/// internal adapter.
fn jobs_routes(jobs: Arc<Jobs>, entry: Entry) -> Router {
    use crate::engines::jobs::batch::api as batches;
    use crate::engines::jobs::files::api as files;
    use crate::engines::jobs::uploads::api as uploads;
    let upload_limit = usize::try_from(jobs.batch.max_file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1024 * 1024);
    let mut router = Router::new();
    for root in ["/v1", "/openai/v1", "/openai"] {
        router = router
            .route(
                &format!("{root}/files"),
                get(files::list)
                    .post(files::upload)
                    .layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
            )
            .route(
                &format!("{root}/files/{{id}}"),
                get(files::retrieve).delete(files::delete),
            )
            .route(&format!("{root}/files/{{id}}/content"), get(files::content))
            .route(
                &format!("{root}/batches"),
                get(batches::list).post(batches::create),
            )
            .route(&format!("{root}/batches/{{id}}"), get(batches::retrieve))
            .route(
                &format!("{root}/batches/{{id}}/cancel"),
                post(batches::cancel),
            )
            .route(&format!("{root}/uploads"), post(uploads::create))
            .route(
                &format!("{root}/uploads/{{id}}/parts"),
                // A part is at most 64 MiB, with its form around it.
                post(uploads::add_part)
                    .layer(axum::extract::DefaultBodyLimit::max(65 * 1024 * 1024)),
            )
            .route(
                &format!("{root}/uploads/{{id}}/complete"),
                post(uploads::complete),
            )
            .route(
                &format!("{root}/uploads/{{id}}/cancel"),
                post(uploads::cancel),
            );
    }
    for root in ["/v1", "/openai/v1"] {
        router = router.route(
            &format!("{root}/async/{{id}}"),
            get(crate::engines::jobs::asynchronous::api::retrieve),
        );
    }
    router
        .route_layer(StageLayer(Arc::new(chain![entry, JobOwner])))
        .with_state(jobs)
}

/// One config snapshot's routes: everything behind layer 4d. The outer
/// layers and the connection handling stay for the process's life.
pub fn inner(services: Services, apart: Apart) -> Apps {
    let authenticate = Entry::Http(Authenticate {
        keys: services.keys.clone(),
        guard: services.guard.clone(),
    });
    let api_router = api(
        &services,
        authenticate.clone(),
        services.async_intake.clone(),
    );

    let jobs_router = services
        .jobs
        .clone()
        .map(|jobs| jobs_routes(jobs, authenticate.clone()))
        .unwrap_or_default();
    let internal = with_fallbacks(api(&services, Entry::Internal, None));
    let messages_router = super::messages::routes(
        internal.clone(),
        services.reader.clone(),
        services.dispatcher.router().clone(),
        authenticate,
    );

    let scrape = health::Scrape {
        metrics: services.metrics.clone(),
        router: services.dispatcher.router().clone(),
        admission: services.admission.clone(),
    };
    let views = admin::Views {
        router: services.dispatcher.router().clone(),
        ledger: services.ledger.as_ref().map(|record| record.ledger.clone()),
        budgets: services.budgets.clone(),
        jobs: services.jobs.clone(),
    };
    let admin = services.admin.map(|token| {
        let metrics = services.metrics.clone();
        admin::snapshot_routes(views, services.ladder.clone(), token, metrics)
    });
    let scrape = Router::new().route("/metrics", get(health::metrics).with_state(scrape));
    // A route served on its own listener does not exist on the public one.
    let (admin, admin_apart) = match admin {
        Some(admin) if apart.admin => (None, Some(admin)),
        admin => (admin, None),
    };
    let (scrape, scrape_apart) = if apart.metrics {
        (None, Some(scrape))
    } else {
        (Some(scrape), None)
    };

    let api_router = Router::new()
        .merge(api_router)
        .merge(messages_router)
        .merge(jobs_router)
        .merge(admin.unwrap_or_default())
        .merge(scrape.unwrap_or_default())
        .route("/healthz", get(health::healthz))
        .route(
            "/readyz",
            get(health::readyz).with_state(health::Readiness {
                dispatcher: services.dispatcher,
                draining: services.draining,
                warmed: services.warmed,
            }),
        );
    Apps {
        api: with_fallbacks(api_router),
        admin: with_fallbacks(admin_apart.unwrap_or_default()),
        metrics: with_fallbacks(scrape_apart.unwrap_or_default()),
        internal,
    }
}

/// Which routes get a listener of their own (`[admin] listen`, `[metrics] listen`).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Apart {
    pub admin: bool,
    pub metrics: bool,
}

/// One snapshot's app per listener, and the internal adapter's.
#[derive(Clone)]
pub struct Apps {
    pub api: Router,
    pub admin: Router,
    pub metrics: Router,
    /// Layers 6 to 9 and the dispatcher for calls Sluice makes on a key's
    /// behalf (semantic-cache embeddings): no HTTP authentication.
    pub internal: Router,
}

/// The OpenAI-shaped answers to unknown paths and methods.
/// The matched route's template is kept for the metrics layer, too.
fn with_fallbacks(router: Router) -> Router {
    let router = if router.has_routes() {
        router.route_layer(SyncLayer(record::KeepRoute))
    } else {
        router
    };
    router
        .fallback(fallback::unknown_route)
        .method_not_allowed_fallback(fallback::method_not_allowed)
}

/// Layers 1 to 4d, on every listener's app for the process's life (CORS on
/// the API's only: browsers call nothing else).
pub fn outer_layers(
    router: Router,
    cors: Option<CorsLayer>,
    metrics: &Metrics,
    tracer: &crate::infra::otel::Tracer,
) -> Router {
    let access_log = access_log::AccessLog {
        metrics: metrics.clone(),
        tracer: tracer.clone(),
    };
    router.layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(fallback::panic_response)) // 1
            .layer(SyncLayer(RequestIds)) // 2
            .option_layer(cors) // 3
            .map_response(|response: http::Response<_>| response.map(axum::body::Body::new))
            .layer(encoding::compression()) // 3b
            .layer(access_log) // 4
            .layer(SyncLayer(record::Record(metrics.clone()))) // 4b
            .layer(SyncLayer(encoding::CheckEncoding)) // 4c
            .map_response(IntoResponse::into_response)
            .layer(RequestDecompressionLayer::new()), // 4d
    )
}

/// The proxied API under OpenAI's paths and Azure OpenAI's: `/v1/...`,
/// `/openai/v1/...`, `/openai/...` (the model in the body, as Azure clients
/// send Responses and moderations) and `/openai/deployments/{deployment}/...`
/// (every endpoint but the Responses API's); calls on stored objects and
/// their collections (`vocab::resource`) under each root.
fn api_routes() -> Router<Arc<Dispatcher>> {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let path = endpoint.path();
        for root in ["/v1", "/openai/v1", "/openai"] {
            let methods = match endpoint {
                // A WebSocket opens with a GET.
                Endpoint::Realtime => get(relay),
                _ => proxy(),
            };
            router = router.route(&format!("{root}/{path}"), methods);
        }
        if !endpoint.is_responses() && endpoint != Endpoint::Realtime {
            router = router.route(
                &format!("/openai/deployments/{{deployment}}/{path}"),
                proxy(),
            );
        }
    }
    for root in ["/v1", "/openai/v1", "/openai"] {
        router = stored_routes(router, root);
    }
    for root in ["/v1", "/openai/v1"] {
        router = router
            .route(&format!("{root}/models"), get(dispatch::list_models))
            .route(
                &format!("{root}/models/{{model}}"),
                get(dispatch::get_model),
            );
    }
    router
}

/// Each kind of stored object under `root`: its collection (a create, a
/// list, or both, where a model call does not already own the path) and
/// every path below an id. The request reader tells the kinds apart.
fn stored_routes(mut router: Router<Arc<Dispatcher>>, root: &str) -> Router<Arc<Dispatcher>> {
    for resource in RESOURCES {
        let collection = format!("{root}/{}", resource.collection);
        let (creates, lists) = (
            resource.serves_collection(&http::Method::POST),
            resource.serves_collection(&http::Method::GET),
        );
        let on_collection = match (creates, lists) {
            (true, true) => Some(get(relay).post(relay)),
            (true, false) => Some(post(relay)),
            // The collection's POST is the model call registered above
            // (stored chat completions): axum merges the methods.
            (false, true) => Some(get(relay)),
            (false, false) => None,
        };
        if let Some(methods) = on_collection {
            router = router.route(&collection, methods);
        }
        let on_object = || get(relay).post(relay).delete(relay);
        router = router
            .route(&format!("{collection}/{{id}}"), on_object())
            .route(&format!("{collection}/{{id}}/{{*rest}}"), on_object());
    }
    router
}

/// A POST route the dispatcher proxies; the request layer already read it.
fn proxy() -> MethodRouter<Arc<Dispatcher>> {
    post(relay)
}

async fn relay(State(dispatcher): State<Arc<Dispatcher>>, request: Request) -> Response {
    dispatcher.handle(request).await
}
