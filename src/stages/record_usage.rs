//! Builds each request's usage record. What it needs arrives in two parts
//! that may come in either order: the response head (status, what served
//! it, cache status) and the usage outcome (at the end of a stream). The
//! record is queued when both are known.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderName;
use axum::response::Response;

use crate::call::Call;
use crate::engines::ledger::cache_status;
use crate::engines::ledger::{Ledger, UsageRecord};
use crate::engines::metering::Pricing;
use crate::engines::tokens::BodyView;
use crate::engines::tokens::Encodings;
use crate::stages::{Next, Stage};
use crate::util::headers::{X_REQUEST_ID, X_UPSTREAM_REQUEST_ID, is_id};
use crate::util::tasks::Tasks;
use crate::vocab::{CACHE_STATUS, ServedBy};
use crate::vocab::{Finished, Outcome, Served, UsageObserver};

/// Starts a usage record for each proxied call and hooks it to the call's
/// end.
#[derive(Clone)]
pub struct RecordUsage {
    pub ledger: Arc<Ledger>,
    pub estimates: Arc<Estimates>,
}

/// What a record's tokens and cost are estimated with when a call produced
/// output but no usage report (a stream cut short).
pub struct Estimates {
    pub pricing: Arc<Pricing>,
    pub encodings: Encodings,
    /// Owns the off-thread estimates, so shutdown waits for their records.
    pub tasks: Tasks,
}

impl Stage for RecordUsage {
    async fn call(&self, request: Request, next: impl Next) -> Response {
        let Some(pending) = self.start(&request) else {
            return next.run(request).await;
        };
        let response = next.run(request).await;
        pending.head(&response);
        response
    }
}

impl RecordUsage {
    /// The call's pending record, hooked to its end; `None` on routes that
    /// are not proxied.
    fn start(&self, request: &Request) -> Option<Arc<Pending>> {
        let (call, api) = Call::proxied(request.extensions())?;
        let identity = &call.identity;
        let headers = request.headers();
        let header = |name: &HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let draft = UsageRecord {
            id: String::new(),
            at_ms: crate::engines::metering::unix_ms(),
            request_id: header(&X_REQUEST_ID).unwrap_or_default(),
            upstream_request_id: None,
            trace_id: crate::infra::otel::trace_id_of(
                request.extensions().get::<crate::infra::otel::LiveSpan>(),
                headers,
            ),
            key: identity.name.clone(),
            key_id: identity.id.clone(),
            org: identity.org.clone(),
            model_requested: api.requested.clone(),
            model: api.route.name.clone(),
            deployment: None,
            priority: api.priority.as_str(),
            cache: "-",
            // Bounded like ids: a 60 KB tag must not reach the ledger.
            tag: headers
                .get(&crate::util::headers::X_SLUICE_TAG)
                .and_then(crate::util::headers::tag)
                .map(str::to_owned),
            api: request
                .extensions()
                .get::<crate::vocab::Api>()
                .copied()
                .unwrap_or_default(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            cost_usd: 0.0,
            latency_ms: 0,
            status: 0,
            estimated: false,
        };
        let pending = Arc::new(Pending {
            state: Mutex::new(Parts {
                record: Some(draft),
                head: false,
                finished: None,
            }),
            started: Instant::now(),
            view: api.view.clone(),
            ledger: self.ledger.clone(),
            estimates: self.estimates.clone(),
        });
        call.hooks.add(Box::new(Hook {
            pending: pending.clone(),
            finished: false,
        }));
        Some(pending)
    }
}

struct Parts {
    /// Taken when emitted, so it is emitted once.
    record: Option<UsageRecord>,
    head: bool,
    /// `None` until the call has finished.
    finished: Option<Ending>,
}

/// A [`Finished`] the record keeps until the response head is known too.
struct Ending {
    outcome: Outcome,
    served: Option<Served>,
    cost_usd: f64,
}

pub struct Pending {
    state: Mutex<Parts>,
    started: Instant,
    /// The call's parsed body, for an estimate of its prompt.
    view: Arc<BodyView>,
    ledger: Arc<Ledger>,
    estimates: Arc<Estimates>,
}

impl Pending {
    fn head(&self, response: &Response) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let Some(record) = state.record.as_mut() else {
            return;
        };
        record.status = i64::from(response.status().as_u16());
        if let Some(served) = response.extensions().get::<ServedBy>() {
            if !served.model.is_empty() {
                record.model = served.model.clone();
            }
            record.deployment = Some(served.deployment.clone());
        }
        if let Some(cache) = response.headers().get(&CACHE_STATUS) {
            record.cache = cache_status(cache.as_bytes());
        }
        record.upstream_request_id = upstream_request_id(response);
        state.head = true;
        self.emit_if_complete(&mut state);
    }

    fn finish(&self, ending: Ending) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.finished.get_or_insert(ending);
        self.emit_if_complete(&mut state);
    }

    fn emit_if_complete(&self, state: &mut Parts) {
        if !state.head {
            return;
        }
        let Some(ending) = state.finished.take() else {
            return;
        };
        let Some(mut record) = state.record.take() else {
            return;
        };
        record.latency_ms = self.started.elapsed().as_millis() as i64;
        // A stream that waited past the first keep-alive answered before
        // anything served it; the dispatcher's word is the complete one.
        if let Some(served) = ending.served {
            record.model = served.model;
            record.deployment = Some(served.deployment);
        }
        let served_from_cache = matches!(record.cache, "hit" | "semantic-hit" | "stale");
        match ending.outcome {
            _ if served_from_cache => {}
            Outcome::Reported(usage) => {
                record.prompt_tokens = usage.prompt_tokens as i64;
                record.completion_tokens = usage.completion_tokens as i64;
                record.cached_tokens = usage.cached_tokens as i64;
                record.cost_usd = ending.cost_usd;
            }
            Outcome::NoOutput | Outcome::Unknown => {}
        }
        // Output may have been produced without a usage report (a stream cut
        // short): count the prompt with the tokenizer, off the async threads
        // (a long prompt takes milliseconds), and say it is an estimate.
        if ending.outcome == Outcome::Unknown && !served_from_cache && record.status < 400 {
            record.estimated = true;
            let (ledger, estimates) = (self.ledger.clone(), self.estimates.clone());
            let view = self.view.clone();
            let tasks = estimates.tasks.clone();
            let promise = ledger.promise();
            let estimate = move || {
                estimates.estimate(&mut record, &view);
                ledger.record(record);
                drop(promise);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(_) => drop(tasks.spawn_blocking(estimate)),
                Err(_) => estimate(),
            }
            return;
        }
        self.ledger.record(record);
    }
}

impl Estimates {
    /// Prompt tokens and their cost; no completion tokens are known.
    /// Runs on the blocking pool: the count may not have been made yet.
    fn estimate(&self, record: &mut UsageRecord, view: &BodyView) {
        let prompt = view.prompt_tokens_now(self.encodings.of(&record.model));
        record.prompt_tokens = prompt as i64;
        let usage = crate::vocab::Usage {
            prompt_tokens: prompt,
            completion_tokens: 0,
            cached_tokens: 0,
        };
        record.cost_usd = self.pricing.cost(&record.model, &usage);
    }
}

/// The upstream's request id, when it is an id by `headers::is_id` (short,
/// printable): a misbehaving upstream cannot fill the ledger.
fn upstream_request_id(response: &Response) -> Option<String> {
    let value = response.headers().get(X_UPSTREAM_REQUEST_ID)?;
    is_id(value).then(|| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

struct Hook {
    pending: Arc<Pending>,
    finished: bool,
}

impl UsageObserver for Hook {
    fn finish(mut self: Box<Self>, finished: &Finished<'_>) {
        self.finished = true;
        self.pending.finish(Ending {
            outcome: finished.outcome,
            served: finished.served.cloned(),
            cost_usd: finished.cost_usd,
        });
    }
}

impl Drop for Hook {
    /// Never finished: answered before the dispatcher (a cache hit, a
    /// refusal), or a stream dropped before its end.
    fn drop(&mut self) {
        if !self.finished {
            self.pending.finish(Ending {
                outcome: Outcome::Unknown,
                served: None,
                cost_usd: 0.0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::headers::MAX_TOKEN_LEN;

    fn with_header(value: &str) -> Response {
        let mut response = Response::new(axum::body::Body::empty());
        response
            .headers_mut()
            .insert(X_UPSTREAM_REQUEST_ID, value.parse().unwrap());
        response
    }

    #[test]
    fn an_upstream_request_id_is_kept_up_to_128_bytes() {
        let longest = "r".repeat(MAX_TOKEN_LEN);
        assert_eq!(upstream_request_id(&with_header(&longest)), Some(longest));
        let longer = "r".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(upstream_request_id(&with_header(&longer)), None);
        assert_eq!(upstream_request_id(&with_header("")), None);
        let absent = Response::new(axum::body::Body::empty());
        assert_eq!(upstream_request_id(&absent), None);
    }
}
