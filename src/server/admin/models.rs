//! `GET /admin/models` (each model's level and why) and
//! `POST /admin/models/{model}/level` (`{"level": 0-4}` forces one,
//! `{"level": null}` returns to the automatic level). Behind the admin token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::engines::degrade::{Ladder, Outlook};
use crate::util::text::clip;
use crate::vocab::Level;
use crate::vocab::error::{GatewayError, error_body, json_response};

pub fn routes(ladder: Arc<Ladder>) -> Router {
    Router::new()
        .route("/admin/models", get(models))
        .route("/admin/models/{model}/level", post(force))
        .with_state(ladder)
}

async fn models(State(ladder): State<Arc<Ladder>>) -> Response {
    let now = Instant::now();
    let data: Vec<Value> = ladder
        .routes()
        .map(|route| {
            let reading = ladder.read(route, now);
            let a = reading.assessment;
            json!({
                "model": &*route.name,
                "level": a.level.number(),
                "automatic_level": a.automatic.number(),
                "forced_level": a.forced.map(Level::number),
                "health": match reading.outlook {
                    Outlook::Ready => "ready",
                    Outlook::FallbackReady => "fallback_ready",
                    Outlook::Trial => "trial",
                    Outlook::Down { .. } => "down",
                },
                "down_for_ms": a.down_for.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    let body = json!({"object": "list", "data": data});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

async fn force(
    State(ladder): State<Arc<Ladder>>,
    Path(model): Path<String>,
    body: Bytes,
) -> Response {
    let Some(route) = ladder.route(&model).cloned() else {
        let body = error_body(
            &format!("The model `{}` does not exist.", clip(&model)),
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        );
        return json_response(StatusCode::NOT_FOUND, body);
    };
    let level = match serde_json::from_slice::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(|v| v.get("level"))
    {
        Some(Value::Null) => None,
        Some(number) => match number.as_u64().and_then(Level::from_number) {
            Some(level) => Some(level),
            None => return bad_level(),
        },
        None => return bad_level(),
    };
    ladder.force(&model, level);
    let reading = ladder.read(&route, Instant::now());
    let body = json!({
        "object": "model.level",
        "model": model,
        "level": reading.assessment.level.number(),
        "automatic_level": reading.assessment.automatic.number(),
        "forced_level": level.map(Level::number),
    });
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

fn bad_level() -> Response {
    GatewayError::invalid(
        "The body must be {\"level\": 0-4} or {\"level\": null} to clear an override.",
        Some("level"),
    )
    .into_response()
}
