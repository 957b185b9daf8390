//! The provider's Files and Batch APIs, for batches forwarded upstream
//! (`batch = "upstream"`): upload an input file, call `batches`, download a
//! result file. Files stream between disk and socket, never whole in
//! memory; every call has a deadline, and an answer's body a cap.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value as Json;
use tokio::io::AsyncWriteExt;

use super::{Deployment, UpstreamClient};
use crate::util::text::clip;

/// Longest a JSON call (create, retrieve, cancel) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest an upload or a download may take, whole.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Largest JSON answer read (a batch object, its errors included).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Why a call to the provider did not give what was asked.
#[derive(Debug)]
pub enum ApiError {
    /// Worth trying again later: no answer, a timeout, a 429 or a 5xx.
    Retry(String),
    /// The provider refused (another status), or the answer cannot be used:
    /// its message, clipped.
    Refused(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(message) | Self::Refused(message) => f.write_str(message),
        }
    }
}

impl UpstreamClient {
    /// Uploads the file at `path` with purpose `batch`; the provider's id.
    pub async fn upload_batch_input(
        &self,
        deployment: &Deployment,
        path: &Path,
        filename: &str,
    ) -> Result<String, ApiError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|error| ApiError::Retry(format!("input file: {error}")))?;
        let length = file
            .metadata()
            .await
            .map_err(|error| ApiError::Retry(format!("input file: {error}")))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let part = reqwest::multipart::Part::stream_with_length(body, length)
            .file_name(filename.to_owned())
            .mime_str("application/jsonl")
            .map_err(|error| ApiError::Refused(error.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", part);
        let request = self
            .authorized(deployment, reqwest::Method::POST, "files")?
            .timeout(TRANSFER_TIMEOUT)
            .multipart(form);
        let answer = json_answer(request).await?;
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Refused("the provider's file has no id".into()))
    }

    /// A JSON call on the Batch API (`batches`, `batches/{id}`,
    /// `batches/{id}/cancel`); the object answered.
    pub async fn batch_call(
        &self,
        deployment: &Deployment,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Json, ApiError> {
        let mut request = self
            .authorized(deployment, method, path)?
            .timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        json_answer(request).await
    }

    /// Streams the provider's file `file_id` into `dest`, at most `cap`
    /// bytes; the bytes written.
    pub async fn download_file(
        &self,
        deployment: &Deployment,
        file_id: &str,
        dest: &Path,
        cap: u64,
    ) -> Result<u64, ApiError> {
        let request = self
            .authorized(
                deployment,
                reqwest::Method::GET,
                &format!("files/{}/content", checked_id(file_id)?),
            )?
            .timeout(TRANSFER_TIMEOUT);
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(refusal(status, &bounded_body(response).await));
        }
        let storage = |error: std::io::Error| ApiError::Retry(format!("result file: {error}"));
        let file = tokio::fs::File::create(dest).await.map_err(storage)?;
        let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, file);
        let mut written = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(unreachable)?;
            written += chunk.len() as u64;
            if written > cap {
                return Err(ApiError::Refused(format!(
                    "the provider's file {file_id} is larger than {cap} bytes"
                )));
            }
            out.write_all(&chunk).await.map_err(storage)?;
        }
        out.flush().await.map_err(storage)?;
        out.get_ref().sync_all().await.map_err(storage)?;
        Ok(written)
    }

    fn authorized(
        &self,
        deployment: &Deployment,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let url = deployment.api_url(path).map_err(ApiError::Refused)?;
        let mut request = self.http.request(method, url);
        if let Some((name, value)) = deployment.auth_header() {
            request = request.header(name, value);
        }
        Ok(request)
    }
}

/// An id the provider gave, checked before it goes into a URL path.
pub fn checked_id(id: &str) -> Result<&str, ApiError> {
    let fits = !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if fits {
        Ok(id)
    } else {
        Err(ApiError::Refused(format!(
            "the provider gave an unusable id `{}`",
            clip(id)
        )))
    }
}

async fn json_answer(request: reqwest::RequestBuilder) -> Result<Json, ApiError> {
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let body = bounded_body(response).await;
    if !status.is_success() {
        return Err(refusal(status, &body));
    }
    serde_json::from_slice(&body).map_err(|error| {
        ApiError::Retry(format!(
            "the provider's answer is not JSON: {}",
            clip(&error.to_string())
        ))
    })
}

/// The body, or its first `MAX_ANSWER_BYTES` (then unparseable, as meant).
async fn bounded_body(response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    body
}

/// A non-2xx answer: 429 and 5xx are retried; others carry the provider's
/// `error.message` (or the start of the body).
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> ApiError {
    let parsed: Option<Json> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|json| json["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let message = format!("provider answered {}: {}", status.as_u16(), clip(&message));
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        ApiError::Retry(message)
    } else {
        ApiError::Refused(message)
    }
}

fn unreachable(error: reqwest::Error) -> ApiError {
    ApiError::Retry(crate::util::text::root_cause(&error))
}
