//! Calls that name a stored object go to the deployment that created it:
//! `GET`/`DELETE /v1/responses/{id}`, `input_items`, `cancel`, a
//! conversation and its items, a stored chat completion, a vector store...
//! (the kinds are in `vocab::resource`), and a new response's
//! `previous_response_id` or `conversation`. An id this gateway did not
//! record, one another key created, or one whose deployment is gone is
//! answered 404 as OpenAI would, rather than asked of another provider
//! account. A create that names no model (`POST /v1/conversations`) and a
//! list go to the caller's home model: `[responses] home_model`, else the
//! first model of the config the key may use.

use std::sync::Arc;

use axum::extract::Request;
use bytes::Bytes;
use serde_json::Value;

use super::{Outcome, RequestReader, identity_of, priority_of, set_request};
use crate::call::ApiRequest;
use crate::engines::request::parse;
use crate::engines::routing::{ModelRoute, ResponsePin, valid_id};
use crate::vocab::error::GatewayError;
use crate::vocab::{Creation, Endpoint, Identity, RESPONSES, Resource, StoredCall};

/// A client query longer than this is refused rather than forwarded.
const MAX_QUERY: usize = 2048;

/// What the path names: an object of `resource` (`id`), or its collection.
pub(super) struct Named<'a> {
    pub resource: &'static Resource,
    pub id: Option<&'a str>,
    /// The whole path below the API root, forwarded as it is.
    pub api_path: &'a str,
}

/// Reads a call on a stored object or on its collection.
pub(super) async fn read(
    reader: &RequestReader,
    named: Named<'_>,
    request: Request,
) -> Result<(Request, Outcome), GatewayError> {
    let received = tokio::time::Instant::now();
    let (mut parts, body) = request.into_parts();
    // `cancel` and the reads take no body; one sent anyway is read
    // (bounded) and dropped.
    let body = reader.read_body(&parts.headers, body).await?;
    let takes_body = parts.method == http::Method::POST;
    if takes_body && !body.is_empty() {
        parse::check_content_type(&parts.headers)?;
    }
    let identity = identity_of(&parts.extensions)?;
    let (route, model) = match named.id {
        Some(id) => {
            let not_found = || not_found(named.resource, id, false);
            let pin = pin_of(reader, id, &identity).await?.ok_or_else(not_found)?;
            let route = reader
                .router
                .pinned(&pin.model, &pin.deployment)
                .ok_or_else(not_found)?
                .clone();
            (route, pin.model)
        }
        None => {
            let route = collection_route(reader, named.resource, &body, &identity)?;
            let model = route.name.clone();
            (route, model)
        }
    };
    if !identity.may_use(&model) {
        return Err(GatewayError::ModelNotAllowed {
            model: model.as_ref().into(),
            key: identity.name.to_string(),
        });
    }
    let stored = StoredCall {
        resource: named.resource,
        method: parts.method.clone(),
        path: Arc::from(named.api_path),
        query: forwarded_query(parts.uri.query())?,
    };
    let body = if takes_body { body } else { Bytes::new() };
    let mut api = ApiRequest::plain(
        Endpoint::Stored,
        body,
        route,
        model,
        (priority_of(&parts.headers, &identity)?, received),
    );
    api.stored = Some(stored);
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

/// Where a create or a list on `resource` goes: a create naming a model the
/// gateway serves (fine-tuning's base model) goes to that model; anything
/// else to the caller's home model.
fn collection_route(
    reader: &RequestReader,
    resource: &Resource,
    body: &[u8],
    identity: &Identity,
) -> Result<Arc<ModelRoute>, GatewayError> {
    if resource.creation == Creation::WithModel
        && let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body)
        && let Some(model) = request.get("model").and_then(Value::as_str)
        && identity.may_use(model)
        && let Some(route) = reader.router.route(model)
    {
        return Ok(route.clone());
    }
    reader.home_route(identity)
}

/// The route of a new call that continues the stored object `id` (a
/// response's `previous_response_id` or `conversation`): `model` on the
/// deployment that holds `id`, and nowhere else.
pub(super) async fn continued(
    reader: &RequestReader,
    resource: &'static Resource,
    id: &str,
    model: &str,
    identity: &Identity,
) -> Result<Arc<ModelRoute>, GatewayError> {
    let not_found = || not_found(resource, id, true);
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
            "The {} `{}` is held by a deployment that does not serve the model `{}`; continue it with a model that deployment serves (such as `{}`).",
            resource.noun.to_ascii_lowercase(),
            crate::util::text::clip(id),
            crate::util::text::clip(model),
            crate::util::text::clip(&pin.model),
        ),
        Some("model"),
    ))
}

/// OpenAI's 404 for an unknown object, naming the request field that
/// named it when one did.
fn not_found(resource: &'static Resource, id: &str, by_field: bool) -> GatewayError {
    if resource == &RESPONSES {
        return GatewayError::ResponseNotFound {
            id: id.into(),
            previous: by_field,
        };
    }
    GatewayError::ObjectNotFound {
        noun: resource.noun,
        id: id.into(),
        param: resource.param.filter(|_| by_field),
    }
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
