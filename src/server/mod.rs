//! The HTTP server: builds the gateway from config, serves it, and shuts it
//! down gracefully.

mod access_log;
mod admin;
mod fallback;
mod health;
mod record;
mod request_id;
mod stack;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Cut;
use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

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
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A built gateway, ready to serve on a listener.
pub struct Gateway {
    app: Router,
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
            (config.server.max_body_bytes, config.metrics.per_key),
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
            guard,
            reader: Arc::new(reader),
            limiter,
            metrics,
        };
        Ok(Self {
            app: stack::app(services),
            shutdown_grace: config.server.shutdown_grace,
            cut,
            ledger,
        })
    }

    pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
        TcpListener::bind(&config.server.listen)
            .await
            .map_err(|source| StartError::Bind {
                address: config.server.listen.clone(),
                source,
            })
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests and
    /// streams finish for up to the grace period before cutting them, and
    /// writes the pending usage records.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let result = self.serve_connections(listener, shutdown).await;
        if let Some(ledger) = &self.ledger {
            ledger.flush(Duration::from_secs(10)).await;
        }
        result
    }

    async fn serve_connections(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let address = listener.local_addr().ok();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let listener = listener.tap_io(|tcp| {
            // Small SSE chunks must leave at once, not wait on Nagle.
            let _ = tcp.set_nodelay(true);
        });
        let app = self
            .app
            .clone()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(());
        });
        let mut server = tokio::spawn(server.into_future());
        if let Some(address) = address {
            tracing::info!(%address, "sluice listening");
        }
        tokio::select! {
            result = &mut server => return flatten(result),
            _ = stop_rx => {}
        }
        tracing::info!(
            grace_ms = self.shutdown_grace.as_millis() as u64,
            "shutting down; draining in-flight requests"
        );
        if let Ok(result) = tokio::time::timeout(self.shutdown_grace, &mut server).await {
            return flatten(result);
        }
        // Open streams end with a "shutting down" SSE error event at their
        // next chunk or timer tick; the flush window lets those reach clients.
        // Whatever is still running after it ends with the process.
        tracing::warn!("shutdown grace period over; ending in-flight streams");
        self.cut.fire();
        match tokio::time::timeout(CUT_FLUSH, &mut server).await {
            Ok(result) => flatten(result),
            Err(_) => {
                server.abort();
                Ok(())
            }
        }
    }
}

fn flatten(
    result: Result<Result<(), std::io::Error>, tokio::task::JoinError>,
) -> Result<(), StartError> {
    match result {
        Ok(inner) => inner.map_err(StartError::Serve),
        Err(join) => Err(StartError::Serve(std::io::Error::other(join.to_string()))),
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
