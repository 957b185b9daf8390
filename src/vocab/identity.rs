//! Who is calling: what a virtual key (or the internal adapter) resolves
//! to, read by every stage and engine that applies per-key settings.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Priority, TokenBudget};

/// Who is calling; attached to the request (and its response) by the auth layer.
#[derive(Debug)]
pub struct Identity {
    /// Stable across renames: limiter state, cache scope, spend and the
    /// ledger follow it.
    pub id: Arc<str>,
    /// What people call the key: errors, logs and metrics show it.
    pub name: Arc<str>,
    pub org: Option<Arc<str>>,
    /// `None` allows every model.
    pub models: Option<HashSet<String>>,
    /// Whether this key's requests may use the response cache.
    pub cache: bool,
    pub priority: Option<Priority>,
    pub max_priority: Option<Priority>,
    pub budget: TokenBudget,
    /// A call Sluice makes on this key's behalf (internal adapter): it
    /// spends the key's tokens and money but not its request count.
    pub internal: bool,
    /// At degradation level 4, calls become asynchronous jobs (202), not 503s.
    pub queue_in_maintenance: bool,
}

impl Identity {
    /// A caller with no org and no restrictions: any model, the cache, no
    /// priority settings or token budget.
    pub fn unrestricted(name: &str) -> Self {
        Self {
            id: Arc::from(name),
            name: Arc::from(name),
            org: None,
            models: None,
            cache: true,
            priority: None,
            max_priority: None,
            budget: Default::default(),
            internal: false,
            queue_in_maintenance: false,
        }
    }

    /// This key as the caller of work Sluice does for it (a semantic-cache
    /// embedding): same attribution, org, class and spend, but any model
    /// (the operator chose it) and no per-request token budget.
    pub fn acting_internally(&self) -> Self {
        Self {
            id: self.id.clone(),
            name: self.name.clone(),
            org: self.org.clone(),
            models: None,
            cache: self.cache,
            priority: self.priority,
            max_priority: self.max_priority,
            budget: Default::default(),
            internal: true,
            queue_in_maintenance: self.queue_in_maintenance,
        }
    }

    /// This key as the caller of work it queued (batch lines): everything
    /// as the key set it, allow-list and token budget included, but its
    /// request count was spent when the work was accepted.
    pub fn running_queued_work(&self) -> Self {
        Self {
            models: self.models.clone(),
            budget: self.budget.clone(),
            ..self.acting_internally()
        }
    }

    pub fn may_use(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|allowed| allowed.contains(model))
    }
}
