//! `GET /v1/models` and `GET /v1/models/{model}`: what this gateway serves,
//! filtered by the caller's allow-list, in OpenAI's list shape.
//! The caller is the identity on the call (layer 5 sets it).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::Dispatcher;
use crate::call::Call;
use crate::vocab::error::{GatewayError, json_response};

/// The `created` every listed model reports: a fixed, plausible time (May
/// 2024) rather than 0, which clients show as 1970 or take for missing.
/// The gateway cannot know when an upstream's model was made.
const CREATED: u64 = 1_715_367_049;

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl<'a> ModelObject<'a> {
    fn new(id: &'a str) -> Self {
        Self {
            id,
            object: "model",
            created: CREATED,
            owned_by: "sluice",
        }
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

pub async fn list_models(
    State(dispatcher): State<Arc<Dispatcher>>,
    Extension(Call { identity, .. }): Extension<Call>,
) -> Response {
    let data = dispatcher
        .router()
        .model_names()
        .iter()
        .filter(|name| identity.may_use(name))
        .map(|name| ModelObject::new(name))
        .collect();
    let list = ModelList {
        object: "list",
        data,
    };
    json_ok(serde_json::to_vec(&list))
}

pub async fn get_model(
    State(dispatcher): State<Arc<Dispatcher>>,
    Extension(Call { identity, .. }): Extension<Call>,
    Path(model): Path<String>,
) -> Response {
    let listed = dispatcher
        .router()
        .model_names()
        .iter()
        .find(|name| ***name == *model);
    match listed {
        Some(name) if identity.may_use(name) => {
            json_ok(serde_json::to_vec(&ModelObject::new(name)))
        }
        _ => GatewayError::ModelNotFound(model.as_str().into()).into_response(),
    }
}

fn json_ok(body: serde_json::Result<Vec<u8>>) -> Response {
    match body {
        Ok(body) => json_response(StatusCode::OK, Bytes::from(body)),
        Err(_) => GatewayError::Internal.into_response(),
    }
}
