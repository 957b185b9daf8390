//! CORS for browser clients (`[server] cors_origins`): preflights are
//! answered before authentication (a browser sends them without the key),
//! and answers expose the headers SDKs and dashboards read.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::AllowOrigin;
pub use tower_http::cors::CorsLayer;

/// Request headers the OpenAI SDKs (the JS one sends `x-stainless-*` from
/// browsers), Azure clients and Sluice's own options use.
const ALLOWED: &[&str] = &[
    "authorization",
    "api-key",
    "content-type",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-request-id",
    "x-sluice-priority",
    "x-sluice-tag",
    "x-sluice-cache",
    "x-sluice-cache-ttl",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
    "x-stainless-helper-method",
    "x-stainless-poll-helper",
    "x-stainless-custom-poll-interval",
];

/// Answer headers a browser script may read.
const EXPOSED: &[&str] = &[
    "x-request-id",
    "x-sluice-attempts",
    "x-sluice-cache",
    "x-sluice-coalesced",
    "x-sluice-degraded-from",
    "x-sluice-deployment",
    "x-sluice-fallback-from",
    "x-sluice-hedge",
    "x-sluice-model",
    "x-sluice-variant",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "retry-after",
    "retry-after-ms",
];

/// `None` without origins: no CORS headers at all. Origins were checked at
/// start-up (`config::validate`).
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|name| HeaderName::from_static(name))
            .collect::<Vec<_>>()
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(names(ALLOWED))
            .expose_headers(names(EXPOSED))
            .max_age(Duration::from_secs(600)),
    )
}
