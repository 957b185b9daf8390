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

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Map, Value};

use self::auto::AutoRouter;
use self::split::Split;
use crate::config::{Config, Priority, RouteConfig, TokenBudget};
use crate::engines::tokens::BodyView;
use crate::engines::tokens::{self, Encoding, Encodings};
use crate::infra::metrics::Metrics;
use crate::vocab::Endpoint;
use crate::vocab::Identity;
use crate::vocab::error::GatewayError;

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
    /// The body and its view, when a policy changed it.
    pub body: Option<(Bytes, Arc<BodyView>)>,
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
    /// The body is read from its view; prompt tokens are counted through it
    /// (off the async threads when large, and once per call).
    pub async fn resolve(
        &self,
        endpoint: Endpoint,
        requested: &str,
        priority: Priority,
        identity: &Identity,
        view: &Arc<BodyView>,
        expected_wait: &(dyn Fn(&str) -> Duration + Sync),
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
        let Some(original) = view.json() else {
            return Err(GatewayError::invalid(
                "The request body could not be read to apply this key's routing and token policies (JSON nested more than 128 levels deep is not supported here).",
                None,
            ));
        };
        // Copied only when a policy changes it.
        let mut request = Cow::Borrowed(original);
        let mut budget = identity.budget.clone();
        if let Some(route) = self.routes.get(requested) {
            resolved.model = route
                .by_priority
                .get(&priority)
                .unwrap_or(&route.default)
                .clone();
            budget = tighter(&budget, &route.budget);
        } else if let Some(auto) = self.auto.as_ref().filter(|a| a.name() == requested) {
            let counts = self.auto_counts(auto, view).await;
            let tier = auto.classify(original, |model| {
                let encoding = self.encoding(model);
                counts
                    .iter()
                    .find(|(counted, _)| *counted == encoding)
                    .map_or(0, |(_, count)| *count)
            });
            self.metrics.auto_decisions.with_label_values(&[tier]).inc();
            resolved.model = tier.to_owned();
        } else if let Some(split) = self.splits.get(requested) {
            let sticky = original
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or(&identity.id);
            let variant = split.pick(sticky);
            resolved.model = variant.model.clone();
            if variant.changes_request() {
                variant.apply(request.to_mut());
            }
            resolved.variant = Some((split.name.clone(), variant.name.clone()));
        }
        self.degrade(&mut resolved, priority, expected_wait);
        if let Some(limit) = budget.max_output_tokens {
            clamp_output(endpoint, &mut request, limit);
        }
        // The body is written again only when a policy changed it; its view
        // is the changed request, with nothing to parse.
        let view = match request {
            Cow::Borrowed(_) => view.clone(),
            Cow::Owned(request) => {
                let bytes =
                    Bytes::from(serde_json::to_vec(&request).map_err(|_| GatewayError::Internal)?);
                let changed = BodyView::written(endpoint, bytes.len(), request);
                resolved.body = Some((bytes, changed.clone()));
                changed
            }
        };
        if let Some(limit) = budget.max_input_tokens {
            let count = view.prompt_tokens(self.encoding(&resolved.model)).await;
            if count > limit {
                return Err(GatewayError::ContextLengthExceeded {
                    limit,
                    count,
                    whose: format!("key `{}`", identity.name),
                });
            }
        }
        Ok(resolved)
    }

    /// The prompt's tokens in each encoding the `auto` tiers' prompt-size
    /// rules need (one, usually).
    async fn auto_counts(&self, auto: &AutoRouter, view: &Arc<BodyView>) -> Vec<(Encoding, u64)> {
        let mut counts: Vec<(Encoding, u64)> = Vec::with_capacity(2);
        for model in auto.counted_models() {
            let encoding = self.encoding(model);
            if !counts.iter().any(|(counted, _)| *counted == encoding) {
                counts.push((encoding, view.prompt_tokens(encoding).await));
            }
        }
        counts
    }

    /// The degradation ladder: a `standard` request whose model's queue wait
    /// has reached `degrade_after` goes to the model's cheaper sibling.
    fn degrade(
        &self,
        resolved: &mut Resolved,
        priority: Priority,
        expected_wait: &(dyn Fn(&str) -> Duration + Sync),
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
/// newest one when it has none; the request is copied only if it changes.
pub(crate) fn clamp_output(
    endpoint: Endpoint,
    request: &mut Cow<'_, Map<String, Value>>,
    limit: u64,
) {
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
                request.to_mut().insert((*field).to_owned(), limit.into());
            }
        }
        (None, Some(newest)) => {
            request.to_mut().insert((*newest).to_owned(), limit.into());
        }
        (None, None) => {}
    }
}

/// A stable 64-bit hash, for sticky assignment.
fn stable_hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
