//! Routing policies: virtual model names resolved to real ones before any
//! other layer sees the request, and token budgets.
//!
//! - priority routes: `[[routes]]` map a name to a model per priority class;
//! - the `auto` router: the cheapest tier whose rules the request fits;
//! - splits (canary, A/B): weighted variants, sticky per `user` (else key),
//!   with optional temperature and system-prompt overrides;
//! - the degradation ladder: `standard` requests move to `[models.X] cheaper`
//!   while the expected queue wait passes `[queue] degrade_after`;
//! - token budgets per key and route: too many input tokens is a 400, max
//!   output tokens are clamped (or set when absent).

mod auto;
mod split;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use self::auto::AutoRouter;
use self::split::Split;
use crate::auth::Identity;
use crate::config::{Config, Priority, RouteConfig, TokenBudget};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::tokens::{self, Encoding, Encodings};
use crate::upstream::Endpoint;

pub struct Policies {
    routes: HashMap<String, RouteConfig>,
    auto: Option<AutoRouter>,
    splits: HashMap<String, Split>,
    cheaper: HashMap<String, String>,
    degrade_after: Option<Duration>,
    encodings: Encodings,
    metrics: Metrics,
}

/// What a request turned into.
pub struct Resolved {
    /// The real model that serves it.
    pub model: String,
    /// The body, when a policy changed it.
    pub body: Option<Bytes>,
    /// `(split, variant)` for canary requests.
    pub variant: Option<(Arc<str>, Arc<str>)>,
    /// The model a degraded request would have gone to.
    pub degraded_from: Option<String>,
}

impl Policies {
    pub fn from_config(config: &Config, metrics: Metrics) -> Self {
        Self {
            routes: config
                .routes
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
            auto: config.auto.clone().map(AutoRouter::new),
            splits: config
                .splits
                .iter()
                .map(|s| (s.name.clone(), Split::new(s)))
                .collect(),
            cheaper: config
                .models
                .iter()
                .filter_map(|(name, s)| Some((name.clone(), s.cheaper.clone()?)))
                .collect(),
            degrade_after: config.queue.degrade_after,
            encodings: Encodings::from_config(&config.models),
            metrics,
        }
    }

    /// Virtual model names, for `/v1/models`.
    pub fn virtual_names(&self) -> impl Iterator<Item = &str> {
        self.routes
            .keys()
            .map(String::as_str)
            .chain(self.auto.iter().map(|a| a.name()))
            .chain(self.splits.keys().map(String::as_str))
    }

    /// Whether anything that reads the body could change this request (the
    /// degradation ladder needs only the model, so it does not count).
    fn applies(&self, requested: &str, identity: &Identity) -> bool {
        self.routes.contains_key(requested)
            || self.auto.as_ref().is_some_and(|a| a.name() == requested)
            || self.splits.contains_key(requested)
            || identity.budget.max_input_tokens.is_some()
            || identity.budget.max_output_tokens.is_some()
    }

    /// Resolves `requested` for this caller and class. `expected_wait`
    /// reports the queue wait ahead of a model, for the degradation ladder.
    pub fn resolve(
        &self,
        endpoint: Endpoint,
        requested: &str,
        priority: Priority,
        identity: &Identity,
        body: &Bytes,
        expected_wait: &dyn Fn(&str) -> Duration,
    ) -> Result<Resolved, GatewayError> {
        let mut resolved = Resolved {
            model: requested.to_owned(),
            body: None,
            variant: None,
            degraded_from: None,
        };
        if !self.applies(requested, identity) {
            self.degrade(&mut resolved, priority, expected_wait);
            return Ok(resolved);
        }
        // A policy applies, so it must read the body: one it cannot read
        // (JSON nested deeper than the parser allows) is refused rather than
        // let past a token budget or a route.
        let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
            return Err(GatewayError::invalid(
                "The request body could not be read to apply this key's routing and token policies (JSON nested more than 128 levels deep is not supported here).",
                None,
            ));
        };
        let mut changed = false;
        let mut budget = identity.budget.clone();
        if let Some(route) = self.routes.get(requested) {
            resolved.model = route
                .by_priority
                .get(&priority)
                .unwrap_or(&route.default)
                .clone();
            budget = tighter(&budget, &route.budget);
        } else if let Some(auto) = self.auto.as_ref().filter(|a| a.name() == requested) {
            let tier = auto.classify(endpoint, &request, |model| self.encoding(model));
            self.metrics.auto_decisions.with_label_values(&[tier]).inc();
            resolved.model = tier.to_owned();
        } else if let Some(split) = self.splits.get(requested) {
            let sticky = request
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or(&identity.name);
            let variant = split.pick(sticky);
            resolved.model = variant.model.clone();
            changed |= variant.apply(&mut request);
            resolved.variant = Some((split.name.clone(), variant.name.clone()));
        }
        self.degrade(&mut resolved, priority, expected_wait);
        if let Some(limit) = budget.max_input_tokens {
            let count = tokens::prompt_tokens(endpoint, &request, self.encoding(&resolved.model));
            if count > limit {
                return Err(GatewayError::ContextLengthExceeded {
                    limit,
                    count,
                    whose: format!("key `{}`", identity.name),
                });
            }
        }
        if let Some(limit) = budget.max_output_tokens {
            changed |= clamp_output(endpoint, &mut request, limit);
        }
        if changed {
            resolved.body = serde_json::to_vec(&request).ok().map(Bytes::from);
        }
        Ok(resolved)
    }

    /// The degradation ladder: a `standard` request whose model's queue wait
    /// has reached `degrade_after` goes to the model's cheaper sibling.
    fn degrade(
        &self,
        resolved: &mut Resolved,
        priority: Priority,
        expected_wait: &dyn Fn(&str) -> Duration,
    ) {
        if priority == Priority::Standard
            && let (Some(cheaper), Some(after)) =
                (self.cheaper.get(&resolved.model), self.degrade_after)
            && expected_wait(&resolved.model) >= after
        {
            resolved.degraded_from = Some(std::mem::replace(&mut resolved.model, cheaper.clone()));
        }
    }

    fn encoding(&self, model: &str) -> Encoding {
        self.encodings.of(model)
    }
}

/// The stricter of two budgets, field by field.
fn tighter(a: &TokenBudget, b: &TokenBudget) -> TokenBudget {
    let min = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    TokenBudget {
        max_input_tokens: min(a.max_input_tokens, b.max_input_tokens),
        max_output_tokens: min(a.max_output_tokens, b.max_output_tokens),
    }
}

/// Clamps the max-output field the request uses, or sets the endpoint's
/// newest one when it has none. `true` if the body changed.
fn clamp_output(endpoint: Endpoint, request: &mut Map<String, Value>, limit: u64) -> bool {
    let fields = tokens::output_fields(endpoint);
    let present = fields
        .iter()
        .find(|f| request.get(**f).is_some_and(|v| !v.is_null()));
    match (present, fields.first()) {
        (Some(field), _) => {
            let current = request
                .get(*field)
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            if current > limit {
                request.insert((*field).to_owned(), limit.into());
                return true;
            }
            false
        }
        (None, Some(newest)) => {
            request.insert((*newest).to_owned(), limit.into());
            true
        }
        (None, None) => false,
    }
}

/// A stable 64-bit hash, for sticky assignment.
fn stable_hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
