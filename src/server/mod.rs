//! The HTTP server: builds the gateway from config, serves it, and shuts it
//! down gracefully.

mod access_log;
mod admin;
mod call_span;
mod conn;
mod cors;
mod encoding;
mod fallback;
mod fd_limit;
mod health;
mod record;
mod request_id;
mod stack;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Cut;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthGuard, FailedAuth, KeyStore};
use crate::cache::ResponseCache;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::ledger::{Estimates, Ledger, RecordUsage};
use crate::limits::Limiter;
use crate::metering::{Budgets, Pricing, SystemClock};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::queue::Scheduler;
use crate::redis::SharedRedis;
use crate::request::RequestReader;
use crate::routing::{ModelRouter, ResponsePins};
use crate::tokens::Encodings;
use crate::upstream::{Deployment, UpstreamClient};
use conn::{Connections, Phase, Timeouts};
pub use fd_limit::raise_fd_limit;

/// Time for final error events to reach clients once the grace period is over.
const CUT_FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Build(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// The gateway's listeners: the API, and the admin and metrics ones when
/// `[admin] listen` / `[metrics] listen` are set.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Self {
            api,
            admin: None,
            metrics: None,
        }
    }
}

/// A built gateway, ready to serve on its listeners.
pub struct Gateway {
    apps: stack::Apps,
    timeouts: Timeouts,
    max_connections: usize,
    metrics: Metrics,
    shutdown_grace: Duration,
    /// Fired when the grace period is over, to end streams still running.
    cut: Cut,
    /// Flushed after the last request, so no usage record is lost.
    ledger: Option<Arc<Ledger>>,
}

impl Gateway {
    pub fn build(config: &Config) -> Result<Self, StartError> {
        let mut deployments = Vec::with_capacity(config.deployments.len());
        for (index, deployment) in config.deployments.iter().enumerate() {
            let built = Deployment::from_config(deployment)
                .map_err(|e| StartError::Build(format!("deployments[{index}]: {e}")))?;
            deployments.push(Arc::new(built));
        }
        let client = UpstreamClient::new().map_err(StartError::Build)?;
        let cut = Cut::default();
        let router = Arc::new(ModelRouter::new(config, deployments));
        let metrics = Metrics::new().map_err(|e| StartError::Build(format!("metrics: {e}")))?;
        let pricing = Arc::new(Pricing::new(&config.pricing));
        let redis = config
            .redis
            .as_ref()
            .map(|redis| SharedRedis::connect(&redis.url, redis.timeout))
            .transpose()
            .map_err(StartError::Build)?;
        let limiter = Limiter::from_config(config, redis.as_ref(), metrics.clone())
            .map_err(StartError::Build)?
            .map(Arc::new);
        let cache = ResponseCache::from_config(
            config,
            redis.as_ref(),
            &router,
            client.clone(),
            metrics.clone(),
            pricing.clone(),
        )
        .map_err(StartError::Build)?
        .map(Arc::new);
        let admission = (config.server.max_concurrency > 0).then(|| {
            Scheduler::new(
                config.server.max_concurrency,
                Arc::new(config.queue.clone()),
            )
        });
        let pins = Arc::new(ResponsePins::new(
            &config.responses,
            redis
                .as_ref()
                .zip(config.redis.as_ref().map(|r| r.key_prefix.as_str())),
        ));
        let reader = RequestReader::new(
            router.clone(),
            Policies::from_config(config, metrics.clone()),
            admission.clone(),
            metrics.clone(),
            (
                config.server.max_body_bytes,
                config.server.body_read_timeout,
                config.metrics.per_key,
            ),
            pins.clone(),
        );
        let budgets = Budgets::from_config(
            config,
            redis.as_ref(),
            Arc::new(SystemClock),
            metrics.clone(),
        )
        .map(Arc::new);
        let ledger = Ledger::start(&config.usage, metrics.clone())
            .map_err(|e| StartError::Build(format!("usage.store: {e}")))?;
        let guard = AuthGuard {
            throttle: FailedAuth::new(config.auth.failed_auth_per_minute).map(Arc::new),
            metrics: metrics.clone(),
        };
        // Last, after every step that can fail.
        crate::routing::probe::spawn(router.clone(), client.clone(), config.health_probe.clone());
        let services = stack::Services {
            ledger: ledger.clone().map(|ledger| RecordUsage {
                ledger,
                estimates: Arc::new(Estimates {
                    pricing: pricing.clone(),
                    encodings: Encodings::from_config(&config.models),
                }),
            }),
            budgets,
            admission,
            cache,
            admin: config
                .admin
                .token
                .as_deref()
                .map(|token| admin::AdminToken {
                    digest: crate::config::sha256(token),
                    guard: guard.clone(),
                }),
            dispatcher: Arc::new(Dispatcher::new(
                router.clone(),
                client,
                config,
                cut.clone(),
                (metrics.clone(), pricing.clone()),
                pins,
            )),
            keys: Arc::new(KeyStore::new(&config.auth, &config.keys)),
            cors: cors::layer(&config.server.cors_origins),
            guard,
            reader: Arc::new(reader),
            limiter,
            metrics: metrics.clone(),
        };
        let apart = stack::Apart {
            admin: config.admin.listen.is_some(),
            metrics: config.metrics.listen.is_some(),
        };
        Ok(Self {
            apps: stack::app(services, apart),
            timeouts: Timeouts {
                header_read: config.server.header_read_timeout,
                idle: config.server.idle_timeout,
            },
            max_connections: fd_limit::max_connections(config.server.max_connections),
            metrics,
            shutdown_grace: config.server.shutdown_grace,
            cut,
            ledger,
        })
    }

    /// Binds `[server] listen`, and `[admin] listen` / `[metrics] listen` when set.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        Ok(Listeners {
            api: bind(&config.server.listen).await?,
            admin: bind_optional(config.admin.listen.as_deref()).await?,
            metrics: bind_optional(config.metrics.listen.as_deref()).await?,
        })
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests and
    /// streams finish for up to the grace period before cutting them, and
    /// writes the pending usage records.
    pub async fn serve(
        self,
        listeners: impl Into<Listeners>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let result = self.serve_connections(listeners.into(), shutdown).await;
        if let Some(ledger) = &self.ledger {
            ledger.flush(Duration::from_secs(10)).await;
        }
        result
    }

    /// Each listener with its app; a listener without an app (or the reverse)
    /// is a caller's mistake.
    fn pair(&self, listeners: Listeners) -> Result<Vec<(TcpListener, axum::Router)>, StartError> {
        let mut pairs = vec![(listeners.api, self.apps.api.clone())];
        for (name, app, listener) in [
            ("admin", &self.apps.admin, listeners.admin),
            ("metrics", &self.apps.metrics, listeners.metrics),
        ] {
            match (app, listener) {
                (Some(app), Some(listener)) => pairs.push((listener, app.clone())),
                (None, None) => {}
                _ => {
                    return Err(StartError::Build(format!(
                        "{name}.listen and the {name} listener given disagree"
                    )));
                }
            }
        }
        Ok(pairs)
    }

    async fn serve_connections(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let pairs = self.pair(listeners)?;
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let tracker = TaskTracker::new();
        let connections = Connections::new(
            self.timeouts,
            self.max_connections,
            self.metrics.connections.clone(),
            phase_rx,
            tracker.clone(),
        );
        tracing::info!(max_connections = self.max_connections, "connection limit");
        for (listener, _) in &pairs {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "sluice listening");
            }
        }
        let accepting = futures_util::future::join_all(
            pairs
                .into_iter()
                .map(|(listener, app)| connections.clone().accept_loop(listener, app)),
        );
        let mut accepting = std::pin::pin!(accepting);
        tokio::select! {
            () = shutdown => {}
            _ = &mut accepting => {}
        }
        tracing::info!(
            grace_ms = self.shutdown_grace.as_millis() as u64,
            "shutting down; draining in-flight requests"
        );
        phase.send_replace(Phase::Draining);
        accepting.await;
        tracker.close();
        if tokio::time::timeout(self.shutdown_grace, tracker.wait())
            .await
            .is_ok()
        {
            return Ok(());
        }
        // Open streams end with a "shutting down" SSE error event at their
        // next chunk or timer tick; the flush window lets those reach clients.
        tracing::warn!("shutdown grace period over; ending in-flight streams");
        self.cut.fire();
        if tokio::time::timeout(CUT_FLUSH, tracker.wait())
            .await
            .is_err()
        {
            // Whatever still runs is dropped with its connection.
            phase.send_replace(Phase::Stop);
            let _ = tokio::time::timeout(CUT_FLUSH, tracker.wait()).await;
        }
        Ok(())
    }
}

async fn bind(address: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            address: address.to_owned(),
            source,
        })
}

async fn bind_optional(address: Option<&str>) -> Result<Option<TcpListener>, StartError> {
    match address {
        Some(address) => bind(address).await.map(Some),
        None => Ok(None),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
