//! Opening a Realtime session (`GET /v1/realtime?model=...`, a WebSocket
//! upgrade): no body; the model is in the query (`model`, or Azure's
//! `deployment`). Its tokens are charged as its responses report them, so
//! the stages behind see a call with none yet.

use std::sync::Arc;

use axum::extract::Request;
use bytes::Bytes;

use super::{Outcome, RequestReader, identity_of, priority_of, set_request};
use crate::call::ApiRequest;
use crate::vocab::Endpoint;
use crate::vocab::error::GatewayError;

pub(super) fn read(
    reader: &RequestReader,
    request: Request,
) -> Result<(Request, Outcome), GatewayError> {
    let received = tokio::time::Instant::now();
    let (mut parts, body) = request.into_parts();
    let model = model_of(parts.uri.query()).ok_or_else(|| {
        GatewayError::invalid(
            "A Realtime session names its model in the query (`?model=...`).",
            Some("model"),
        )
    })?;
    let identity = identity_of(&parts.extensions)?;
    if !identity.may_use(&model) {
        return Err(GatewayError::ModelNotAllowed {
            model: model.as_str().into(),
            key: identity.name.to_string(),
        });
    }
    let route = reader
        .router
        .route(&model)
        .ok_or_else(|| GatewayError::ModelNotFound(model.as_str().into()))?
        .clone();
    let priority = priority_of(&parts.headers, &identity)?;
    let requested = Arc::from(model.as_str());
    let api = ApiRequest::plain(
        Endpoint::Realtime,
        Bytes::new(),
        route,
        requested,
        (priority, received),
    );
    set_request(&mut parts.extensions, api)?;
    let outcome = Outcome {
        variant: None,
        degraded_from: None,
        key: identity.name.clone(),
    };
    Ok((Request::from_parts(parts, body), outcome))
}

/// `model` (OpenAI) or `deployment` (Azure's classic path), percent-decoded.
pub fn model_of(query: Option<&str>) -> Option<String> {
    let query = query?;
    ["model", "deployment"].into_iter().find_map(|name| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_read_from_the_query() {
        assert_eq!(
            model_of(Some("model=gpt-realtime")).as_deref(),
            Some("gpt-realtime")
        );
        assert_eq!(
            model_of(Some("api-version=2025-04-01-preview&deployment=my%2Drt")).as_deref(),
            Some("my-rt")
        );
        assert_eq!(model_of(Some("model=")), None);
        assert_eq!(model_of(None), None);
    }
}
