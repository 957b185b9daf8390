//! Calls that name a stored response go to the deployment that created it:
//! `GET`/`DELETE /v1/responses/{id}`, `input_items`, `cancel`, and a new
//! response's `previous_response_id`. An id this gateway did not record, one
//! another key created, or one whose deployment is gone is answered 404 as
//! OpenAI would, rather than asked of another provider account.

use std::sync::Arc;

use axum::extract::Request;
use bytes::Bytes;

use super::{Outcome, RequestReader, identity_of, priority_of, set_request};
use crate::call::ApiRequest;
use crate::engines::request::parse;
use crate::engines::routing::{ModelRoute, ResponsePin, valid_id};
use crate::engines::tokens::BodyView;
use crate::vocab::Identity;
use crate::vocab::error::GatewayError;
use crate::vocab::{Endpoint, StoredCall};

/// A client query longer than this is refused rather than forwarded.
const MAX_QUERY: usize = 2048;

/// Reads a call on the stored response `id`; `rest` is the path below
/// `responses/` (`{id}`, `{id}/input_items`, `{id}/cancel`).
pub(super) async fn read(
    reader: &RequestReader,
    id: &str,
    rest: &str,
    request: Request,
) -> Result<(Request, Outcome), GatewayError> {
    let received = tokio::time::Instant::now();
    let (mut parts, body) = request.into_parts();
    // `cancel` takes no body; one sent anyway is read (bounded) and dropped.
    parse::read_body(&parts.headers, body, reader.max_body_bytes).await?;
    let identity = identity_of(&parts.extensions)?;
    let not_found = || GatewayError::ResponseNotFound {
        id: id.into(),
        previous: false,
    };
    let pin = pin_of(reader, id, &identity).await?.ok_or_else(not_found)?;
    if !identity.may_use(&pin.model) {
        return Err(GatewayError::ModelNotAllowed {
            model: pin.model.as_ref().into(),
            key: identity.name.to_string(),
        });
    }
    let route = reader
        .router
        .pinned(&pin.model, &pin.deployment)
        .ok_or_else(not_found)?
        .clone();
    let stored = StoredCall {
        method: parts.method.clone(),
        path: Arc::from(rest),
        query: forwarded_query(parts.uri.query())?,
    };
    let api = ApiRequest {
        endpoint: Endpoint::StoredResponse,
        body: Bytes::new(),
        view: BodyView::opaque(Endpoint::StoredResponse, 0),
        requested: pin.model.clone(),
        route,
        stream: false,
        affinity: None,
        priority: priority_of(&parts.headers, &identity)?,
        received,
        hide_usage: false,
        include_usage: false,
        content_type: None,
        stored: Some(stored),
    };
    set_request(&mut parts.extensions, api)?;
    let outcome = Outcome {
        variant: None,
        degraded_from: None,
        key: identity.name.clone(),
    };
    Ok((
        Request::from_parts(parts, axum::body::Body::empty()),
        outcome,
    ))
}

/// The route of a new response that continues `id`: `model` on the
/// deployment that holds `id`, and nowhere else.
pub(super) async fn continued(
    reader: &RequestReader,
    id: &str,
    model: &str,
    identity: &Identity,
) -> Result<Arc<ModelRoute>, GatewayError> {
    let not_found = || GatewayError::ResponseNotFound {
        id: id.into(),
        previous: true,
    };
    let pin = pin_of(reader, id, identity).await?.ok_or_else(not_found)?;
    if let Some(route) = reader.router.pinned(model, &pin.deployment) {
        return Ok(route.clone());
    }
    let deployment_exists = reader
        .router
        .backends()
        .iter()
        .any(|backend| backend.deployment.name == pin.deployment);
    if !deployment_exists {
        return Err(not_found());
    }
    if reader.router.route(model).is_none() {
        return Err(GatewayError::ModelNotFound(model.into()));
    }
    Err(GatewayError::invalid(
        format!(
            "The previous response is held by a deployment that does not serve the model `{}`; continue it with the model it was created with (`{}`).",
            crate::util::text::clip(model),
            crate::util::text::clip(&pin.model),
        ),
        Some("model"),
    ))
}

/// The pin of `id`, if it is this caller's.
async fn pin_of(
    reader: &RequestReader,
    id: &str,
    identity: &Identity,
) -> Result<Option<ResponsePin>, GatewayError> {
    if !valid_id(id) {
        return Ok(None);
    }
    let pin = reader.pins.find(id).await?;
    Ok(pin.filter(|pin| pin.owner == identity.id))
}

/// The client's query without `api-version` (the gateway's Azure paths take
/// it; each deployment sends its own).
fn forwarded_query(query: Option<&str>) -> Result<Option<Arc<str>>, GatewayError> {
    let Some(query) = query else {
        return Ok(None);
    };
    if query.len() > MAX_QUERY {
        return Err(GatewayError::invalid(
            format!("The query string is longer than {MAX_QUERY} bytes."),
            None,
        ));
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("api-version="))
        .collect();
    Ok((!kept.is_empty()).then(|| Arc::from(kept.join("&"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_goes_on_without_api_version() {
        let forwarded = |q| forwarded_query(Some(q)).unwrap().map(|q| q.to_string());
        assert_eq!(
            forwarded("api-version=2025-04-01-preview&limit=5&order=asc").as_deref(),
            Some("limit=5&order=asc")
        );
        assert_eq!(forwarded("api-version=v1"), None);
        assert!(forwarded_query(Some(&"a".repeat(3000))).is_err());
    }
}
