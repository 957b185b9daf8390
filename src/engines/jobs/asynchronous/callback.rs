//! Delivers a finished job to its `x-sluice-callback` URL: one JSON POST
//! (the job and its answer), a few attempts with back-off, no redirects
//! followed and nothing of the gateway's own (keys, upstream credentials)
//! sent.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::record::{Answer, CALLBACK_DELIVERED, CALLBACK_FAILED, Job};

/// Attempts per callback, and the wait before the second (doubled after).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The client callbacks are sent with; `None` when it cannot be built
/// (callbacks then fail, the jobs do not).
pub fn client(timeout: Duration) -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .inspect_err(|error| tracing::warn!(%error, "cannot build the callback client"))
        .ok()
}

/// What the receiver gets: the job object and `response` (`status_code`,
/// and `body` as JSON when it parses, else as text).
pub fn payload(job: &Job, answer: &Answer) -> Json {
    let body = serde_json::from_slice::<Json>(&answer.body)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&answer.body).into_owned()));
    let mut object = job.to_json();
    object["response"] = json!({"status_code": answer.status, "body": body});
    object
}

/// Sends the job to `url`; `delivered` once a receiver answered 2xx, else
/// `failed` after the last attempt.
pub async fn deliver(client: Option<&reqwest::Client>, url: &str, payload: &Json) -> &'static str {
    let Some(client) = client else {
        return CALLBACK_FAILED;
    };
    let body = payload.to_string();
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return CALLBACK_DELIVERED,
            Ok(response) => {
                tracing::info!(status = %response.status(), attempt, "callback refused")
            }
            // Without the URL: a callback URL may carry the receiver's token.
            Err(error) => {
                let error = error.without_url();
                tracing::info!(%error, attempt, "callback not delivered");
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    CALLBACK_FAILED
}
