//! Providers answered in-process rather than over HTTP (the mock), behind
//! one trait, and the registry the composition root fills: `upstream` knows
//! only OpenAI's and Azure's HTTP APIs, and nothing of any local provider's
//! code.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{UpstreamRequest, UpstreamResponse};
use crate::config::{DeploymentConfig, Provider};

/// A provider that answers a deployment's calls in this process.
pub trait LocalProvider: Send + Sync + 'static {
    fn answer(&self, request: UpstreamRequest) -> BoxFuture<'_, UpstreamResponse>;

    /// A Realtime session with `model` (`beta`: the beta API's event
    /// names), if the provider has the API.
    fn realtime(&self, model: &str, beta: bool) -> Option<Box<dyn LocalSession>> {
        let _ = (model, beta);
        None
    }
}

/// A session a local provider runs in-process.
pub trait LocalSession: Send {
    /// The events the server sends first (`session.created`).
    fn opening(&mut self) -> Vec<String>;
    /// The events a client event causes, in order.
    fn on_client(&mut self, event: &str) -> Vec<String>;
}

/// Makes a deployment's local provider from its config.
pub type MakeLocal = fn(&DeploymentConfig) -> Arc<dyn LocalProvider>;

/// The local providers this build serves, by config name.
#[derive(Clone, Default)]
pub struct Providers {
    local: HashMap<&'static str, MakeLocal>,
}

impl Providers {
    /// Serves `provider` deployments with what `make` builds.
    pub fn with_local(mut self, provider: Provider, make: MakeLocal) -> Self {
        self.local.insert(provider.as_str(), make);
        self
    }

    /// The local provider for `config`, or `None` for an HTTP one.
    pub(super) fn local(
        &self,
        config: &DeploymentConfig,
    ) -> Result<Option<Arc<dyn LocalProvider>>, String> {
        match (config.provider, self.local.get(config.provider.as_str())) {
            (_, Some(make)) => Ok(Some(make(config))),
            (Provider::Mock, None) => Err("the mock provider is not in this build".into()),
            _ => Ok(None),
        }
    }
}
