//! The ladder's two stages: 6c reads the level and marks the call, 7a
//! answers a marked call the cache did not.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::call::{ApiRequest, Call};
use crate::engines::degrade::Outlook;
use crate::engines::degrade::{Ladder, statics};
use crate::engines::tokens::BodyView;
use crate::stages::AsyncIntake;
use crate::stages::{Next, Stage};
use crate::vocab::error::{error_body, json_response, set_retry_after};
use crate::vocab::{DEGRADED, Degraded, Level};

/// Layer 6c: level 4 answers 503 `maintenance` here (or, for a key with
/// `queue_in_maintenance`, accepts the call as an asynchronous job); levels
/// 2 and 3 mark the call [`Degraded`] and label a cache answer
/// `x-sluice-degraded: cached`.
pub struct CheckLevel {
    pub ladder: Arc<Ladder>,
    /// Layer 5b's intake, on the HTTP chain only: a replayed job is never
    /// queued again.
    pub intake: Option<Arc<AsyncIntake>>,
}

impl Stage for CheckLevel {
    async fn call(&self, mut request: Request, next: impl Next) -> Response {
        let span = request
            .extensions()
            .get::<crate::infra::otel::LiveSpan>()
            .cloned();
        let Some(call) = Call::proxied_mut(request.extensions_mut()) else {
            return next.run(request).await;
        };
        let Some(api) = call.request.as_mut() else {
            return next.run(request).await;
        };
        let reading = self.ladder.read(&api.route, Instant::now());
        let level = reading.assessment.level;
        if level != Level::Full
            && let Some(span) = &span
        {
            span.set("sluice.degradation.level", i64::from(level.number()));
        }
        // An automatic level lets a trial call through: it is how recovery shows.
        let trial = reading.outlook == Outlook::Trial && reading.assessment.forced.is_none();
        match level {
            Level::Maintenance => match &self.intake {
                // Only JSON, unstreamed calls can be kept for later.
                Some(intake)
                    if call.identity.queue_in_maintenance
                        && !api.stream
                        && api.content_type.is_none() =>
                {
                    let (identity, body) = (call.identity.clone(), api.body.clone());
                    // Boxed: a 5 KB future only maintenance takes.
                    let head = (request.uri(), request.headers());
                    Box::pin(intake.accept_read(&identity, head, &body, span.as_ref())).await
                }
                _ => maintenance(&api.route.name, reading.retry_after),
            },
            Level::CachedOnly | Level::Static if !trial => {
                call.degraded = Some(Degraded {
                    level,
                    retry_after: reading.retry_after,
                });
                let mut response = next.run(request).await;
                if response.status().is_success() && !response.headers().contains_key(DEGRADED) {
                    response
                        .headers_mut()
                        .insert(DEGRADED, HeaderValue::from_static("cached"));
                }
                response
            }
            Level::Full => next.run(request).await,
            // Reduced, or a trial call at 2-3: it reaches the upstream.
            _ => {
                if let Some(limit) = self.ladder.output_cap(&api.route.name) {
                    clamp_output(api, limit);
                }
                next.run(request).await
            }
        }
    }
}

/// `degraded_max_output_tokens`: the call's max output tokens clamped (or
/// set), its body written again only when that changes it.
fn clamp_output(api: &mut ApiRequest, limit: u64) {
    let view = api.view.clone();
    let Some(json) = view.json() else {
        return;
    };
    let mut changed = Cow::Borrowed(json);
    crate::engines::policy::clamp_output(api.endpoint, &mut changed, limit);
    if let Cow::Owned(changed) = changed
        && let Ok(bytes) = serde_json::to_vec(&changed)
    {
        api.view = BodyView::written(api.endpoint, bytes.len(), changed);
        api.body = Bytes::from(bytes);
    }
}

/// Layer 7a: a call marked [`Degraded`] that the cache did not answer gets
/// a static answer (level 3, when one matches) or 503 `service_degraded`.
pub struct Fallback(pub Arc<Ladder>);

impl Stage for Fallback {
    async fn call(&self, request: Request, next: impl Next) -> Response {
        let Some((call, api)) = Call::proxied(request.extensions()) else {
            return next.run(request).await;
        };
        let Some(degraded) = call.degraded else {
            return next.run(request).await;
        };
        if degraded.level == Level::Static
            && let Some(answer) = statics::answer(
                &self.0.statics,
                &statics::Asked {
                    endpoint: api.endpoint,
                    body: api.view.json(),
                    model: &api.route.name,
                    requested: &api.requested,
                    stream: api.stream,
                    include_usage: api.include_usage,
                },
                degraded.retry_after,
            )
        {
            return answer;
        }
        unavailable(
            &format!(
                "Model `{}` is degraded: no deployment is usable and this request is not in the cache. Try again later.",
                crate::util::text::clip(&api.route.name)
            ),
            "service_degraded",
            degraded.retry_after,
        )
    }
}

fn maintenance(model: &str, retry_after: Duration) -> Response {
    unavailable(
        &format!(
            "Model `{}` is under maintenance. Try again later.",
            crate::util::text::clip(model)
        ),
        "maintenance",
        retry_after,
    )
}

fn unavailable(message: &str, code: &str, retry_after: Duration) -> Response {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        error_body(message, "server_error", None, Some(code)),
    );
    set_retry_after(response.headers_mut(), retry_after);
    response
}
