//! The live core: the config snapshot in force behind an `ArcSwap`, the
//! registries every snapshot shares, and the ways a new snapshot comes in
//! (SIGHUP, `POST /admin/reload`, the config file changing, runtime keys
//! changing).
//!
//! A call loads the snapshot once, at the edge of layer 5, and runs on the
//! stages built from it until its last byte: a swap never changes a call
//! in flight, and nothing waits for a swap. The internal adapter (`Pipeline`)
//! does the same for calls Sluice makes on a key's behalf.

pub mod admin;
mod forwarded;
pub mod keys;
mod registries;
mod reload;
mod snapshot;
mod watch;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::Service;
use tower::util::{Oneshot, ServiceExt};

use super::StartError;
use super::stack::Apart;
use crate::config::{BatchMode, Config, KeyConfig};
use crate::engines::internal::{ForwardedUsage, InternalCalls};
use crate::engines::keys::RuntimeKey;
use crate::upstream::Deployment;
use crate::util::tasks::Tasks;
use crate::vocab::error::GatewayError;

pub use registries::Registries;
use snapshot::Snapshot;

pub struct Live {
    current: ArcSwap<Snapshot>,
    pub registries: Registries,
    apart: Apart,
    /// The file reloads read; `None` for a config given in memory (tests).
    path: Option<PathBuf>,
    /// The runtime keys merged into every snapshot.
    runtime_keys: ArcSwap<Vec<KeyConfig>>,
    /// Reloads run one at a time, so two cannot interleave their swaps;
    /// it holds the runtime key set last applied.
    reloading: tokio::sync::Mutex<Option<Arc<[RuntimeKey]>>>,
    pipeline: Arc<Pipeline>,
}

impl Live {
    pub fn start(
        config: Config,
        path: Option<PathBuf>,
        tasks: Tasks,
        apart: Apart,
    ) -> Result<Arc<Self>, StartError> {
        let pipeline = Arc::new(Pipeline::default());
        let registries = Registries::start(&config, tasks, pipeline.clone())?;
        let file = Arc::new(config);
        let snapshot = Snapshot::build(file.clone(), file, &registries, pipeline.clone(), apart)
            .map_err(StartError::Build)?;
        let live = Arc::new(Self {
            current: ArcSwap::from_pointee(snapshot),
            registries,
            apart,
            path,
            runtime_keys: ArcSwap::default(),
            reloading: tokio::sync::Mutex::new(None),
            pipeline: pipeline.clone(),
        });
        let _ = pipeline.live.set(Arc::downgrade(&live));
        live.publish(None);
        watch::hangups(&live);
        Ok(live)
    }

    /// The snapshot in force now.
    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The config file's settings in force (without the runtime keys).
    pub fn file_config(&self) -> Arc<Config> {
        self.snapshot().file.clone()
    }

    /// The app serving one listener, on the snapshot in force at each call.
    pub fn app(self: &Arc<Self>, listener: Listener) -> InForce {
        InForce {
            live: self.clone(),
            listener,
        }
    }

    /// Starts following the config file (see `watch`); SIGHUP is taken
    /// over at start-up. Starts the runners of batches and asynchronous jobs.
    pub fn watch(self: &Arc<Self>) {
        watch::file(self);
        if let Some(jobs) = &self.registries.jobs {
            jobs.run();
        }
    }

    /// Whether the config in force asks for file changes to be applied.
    fn watches_file(&self) -> bool {
        self.snapshot().file.server.watch_config
    }
}

/// Which listener an app serves.
#[derive(Clone, Copy)]
pub enum Listener {
    Api,
    Admin,
    Metrics,
}

/// One listener's app: each call runs on the snapshot in force when it
/// arrives. The router clone it takes holds that snapshot's stages, so the
/// call and its streamed body finish on them whatever is swapped meanwhile.
#[derive(Clone)]
pub struct InForce {
    live: Arc<Live>,
    listener: Listener,
}

impl Service<Request> for InForce {
    type Response = Response;
    type Error = Infallible;
    type Future = Oneshot<Router, Request>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let snapshot = self.live.current.load();
        let apps = &snapshot.apps;
        let router = match self.listener {
            Listener::Api => &apps.api,
            Listener::Admin => &apps.admin,
            Listener::Metrics => &apps.metrics,
        };
        router.clone().oneshot(request)
    }
}

/// The internal adapter: runs a call Sluice makes for a key through layers
/// 6 to 9 and the dispatcher of the snapshot in force. Holds the core
/// weakly: the snapshots that hold it are the core's.
#[derive(Default)]
pub struct Pipeline {
    live: OnceLock<Weak<Live>>,
}

impl InternalCalls for Pipeline {
    /// Runs the call in its own trace span (see `call_trace::open_internal`),
    /// ended at the answer's head: internal callers read answers whole.
    fn call(&self, mut request: Request) -> BoxFuture<'static, Response> {
        let Some(live) = self.live.get().and_then(Weak::upgrade) else {
            return Box::pin(std::future::ready(
                GatewayError::ShuttingDown.into_response(),
            ));
        };
        let router = live.snapshot().apps.internal.clone();
        let trace = super::call_trace::open_internal(&live.registries.tracer, &mut request);
        Box::pin(async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if let Some(trace) = trace {
                super::call_trace::on_response(&trace, &response);
                super::call_trace::close(&trace, None);
            }
            response
        })
    }

    fn identity(&self, key_id: &str) -> Option<Arc<crate::vocab::Identity>> {
        let live = self.live.get().and_then(Weak::upgrade)?;
        live.snapshot().keys.by_id(key_id)
    }

    fn busier_work_waiting(&self) -> bool {
        self.live.get().and_then(Weak::upgrade).is_some_and(|live| {
            live.registries
                .admission
                .waiting_above(crate::config::Priority::Batch)
        })
    }

    fn serves(&self, model: &str) -> bool {
        self.live
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|live| live.snapshot().models.contains(model))
    }

    fn batch_deployment(&self, model: &str) -> Option<Arc<Deployment>> {
        let live = self.live.get().and_then(Weak::upgrade)?;
        let snapshot = live.snapshot();
        let route = snapshot.router.route(model)?;
        route
            .backends()
            .find(|backend| backend.deployment.batch == BatchMode::Upstream)
            .map(|backend| backend.deployment.clone())
    }

    fn maintenance(&self, model: &str) -> bool {
        let Some(live) = self.live.get().and_then(Weak::upgrade) else {
            return false;
        };
        let snapshot = live.snapshot();
        let in_maintenance = |model: &str| {
            snapshot.router.route(model).is_some_and(|route| {
                let reading = snapshot.ladder.read(route, tokio::time::Instant::now());
                reading.assessment.level == crate::vocab::Level::Maintenance
            })
        };
        // A virtual name is held while every model it can reach is.
        match snapshot.config.virtual_targets(model) {
            Some(targets) => !targets.is_empty() && targets.into_iter().all(in_maintenance),
            None => in_maintenance(model),
        }
    }

    fn meter_forwarded(&self, work: ForwardedUsage) {
        if let Some(live) = self.live.get().and_then(Weak::upgrade) {
            forwarded::meter(&live, work);
        }
    }

    fn deployment(&self, name: &str) -> Option<Arc<Deployment>> {
        let live = self.live.get().and_then(Weak::upgrade)?;
        let snapshot = live.snapshot();
        snapshot
            .router
            .backends()
            .iter()
            .find(|backend| &*backend.deployment.name == name)
            .map(|backend| backend.deployment.clone())
    }
}
