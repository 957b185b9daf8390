//! Token usage reported by the upstream, and the hooks through which stages
//! (rate limits, budgets, the ledger) learn it once the response is done.
//! For streams that is after the handler returned, so hooks travel with the
//! call instead of being read off the response.

use std::sync::{Arc, Mutex};

use crate::config::Price;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// USD at `price`, cached prompt tokens at the cached rate.
    pub fn cost_at(&self, price: &Price) -> f64 {
        let cached = self.cached_tokens.min(self.prompt_tokens);
        let fresh = self.prompt_tokens - cached;
        let cached_rate = price.cached_input_per_1m.unwrap_or(price.input_per_1m);
        (fresh as f64 * price.input_per_1m
            + cached as f64 * cached_rate
            + self.completion_tokens as f64 * price.output_per_1m)
            / 1_000_000.0
    }
}

/// How a call ended, as far as token usage goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream reported usage.
    Reported(Usage),
    /// The upstream refused or failed before producing output.
    NoOutput,
    /// Output may have been produced but no usage was reported.
    Unknown,
}

/// The model and deployment that served a call and that model's price. The
/// dispatcher sets it once an attempt succeeds, so every observer bills and
/// attributes the same call, fallbacks included.
#[derive(Clone)]
pub struct Served {
    pub model: Arc<str>,
    pub deployment: Arc<str>,
    pub price: Option<Price>,
}

/// What observers learn when a call ends.
pub struct Finished<'a> {
    pub outcome: Outcome,
    /// `None` when no attempt succeeded.
    pub served: Option<&'a Served>,
    /// Reported usage at the serving model's price; 0 when unknown or unpriced.
    pub cost_usd: f64,
}

pub trait UsageObserver: Send + 'static {
    fn finish(self: Box<Self>, finished: &Finished<'_>);
}

/// Observers registered by layers; the dispatcher finishes them once.
#[derive(Clone, Default)]
pub struct UsageHooks(Arc<Mutex<Hooks>>);

#[derive(Default)]
struct Hooks {
    observers: Vec<Box<dyn UsageObserver>>,
    served: Option<Served>,
    /// Fraction taken off the price (`[batch] discount` on batch lines).
    discount: f64,
}

/// A price cut the internal adapter applies to a call (batch lines): an
/// extension only Sluice attaches, never read from a client's headers.
#[derive(Debug, Clone, Copy)]
pub struct Discount(pub f64);

impl UsageHooks {
    pub fn add(&self, observer: Box<dyn UsageObserver>) {
        if let Ok(mut hooks) = self.0.lock() {
            hooks.observers.push(observer);
        }
    }

    /// Prices this call `fraction` lower (0 to 1).
    pub fn discount(&self, Discount(fraction): Discount) {
        if let Ok(mut hooks) = self.0.lock() {
            hooks.discount = fraction.clamp(0.0, 1.0);
        }
    }

    pub fn served_by(&self, served: Served) {
        if let Ok(mut hooks) = self.0.lock() {
            hooks.served = Some(served);
        }
    }

    /// Prices the outcome once and tells every observer.
    pub fn finish(&self, outcome: Outcome) {
        let Hooks {
            observers,
            served,
            discount,
        } = match self.0.lock() {
            Ok(mut hooks) => std::mem::take(&mut *hooks),
            Err(_) => return,
        };
        let cost_usd = match (outcome, served.as_ref().and_then(|s| s.price.as_ref())) {
            (Outcome::Reported(usage), Some(price)) => usage.cost_at(price) * (1.0 - discount),
            _ => 0.0,
        };
        let finished = Finished {
            outcome,
            served: served.as_ref(),
            cost_usd,
        };
        for observer in observers {
            observer.finish(&finished);
        }
    }
}
