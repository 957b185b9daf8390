//! The admin token: every `/admin` route runs behind it.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::{KeyDigest, sha256};
use crate::engines::auth::{AuthGuard, Presented, presented_key};
use crate::util::drain::refuse_after_drain;
use crate::vocab::error::{GatewayError, error_body};

/// The admin token, kept only as a digest, and the throttle of failed
/// attempts it shares with the API keys.
#[derive(Clone)]
pub struct AdminToken {
    pub digest: KeyDigest,
    pub guard: AuthGuard,
}

pub async fn require_token(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    check_token(&token, request, next).await
}

/// Runs `next` when the request carries the admin token; else 401 (or 429
/// past the failed-attempt throttle).
pub async fn check_token(token: &AdminToken, request: Request, next: Next) -> Response {
    if let Err(refused) = token.guard.admit(&request) {
        return refuse_after_drain(request, *refused).await;
    }
    // Read the way API keys are, so a client that reaches /v1 reaches /admin.
    let refused = match presented_key(request.headers()) {
        Presented::Key(presented) if sha256(presented) == token.digest => {
            return next.run(request).await;
        }
        Presented::Absent => {
            let mut refused = token.guard.refuse(&request, GatewayError::MissingApiKey);
            *refused.body_mut() = axum::body::Body::from(error_body(
                "The admin API needs `Authorization: Bearer <admin token>`.",
                "invalid_request_error",
                None,
                None,
            ));
            refused
        }
        Presented::Key(_) | Presented::Malformed => token.guard.refuse(
            &request,
            GatewayError::InvalidApiKey {
                masked: "(admin token)".into(),
            },
        ),
    };
    refuse_after_drain(request, refused).await
}
