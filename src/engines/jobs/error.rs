//! What a Files, Batch or asynchronous-request call can fail with, as the
//! OpenAI-shaped answers clients expect.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::infra::sql::DbError;
use crate::vocab::error::{error_body, json_response, set_retry_after};

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// The store failed or did not answer: worth retrying.
    #[error("The job store is unavailable; please retry.")]
    Store(#[source] DbError),
    /// Reading or writing file bytes failed.
    #[error("The file storage failed; please retry.")]
    Storage(#[source] std::io::Error),
    /// Unknown, or another tenant's: the two are not told apart.
    #[error("No such {kind}: '{id}'")]
    NotFound { kind: &'static str, id: String },
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<&'static str>,
    },
    #[error("The file is larger than the {limit} bytes this gateway accepts.")]
    TooLarge { limit: u64 },
    #[error(
        "This key keeps {used} bytes of files and may keep {limit}; delete files (or wait for them to expire) to upload this one."
    )]
    StorageFull { used: u64, limit: u64 },
    #[error("This key has reached its limit of {0} open batches; wait for some to finish.")]
    TooManyBatches(usize),
    #[error("The upload stalled: no bytes arrived for {0:?}.")]
    Stalled(std::time::Duration),
    /// A state change that the object's status does not allow.
    #[error("{0}")]
    Conflict(String),
}

impl From<DbError> for JobsError {
    fn from(error: DbError) -> Self {
        Self::Store(error)
    }
}

impl JobsError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self::Invalid {
            message: message.into(),
            param,
        }
    }

    /// Ids come from request paths: the answer quotes at most a clipped one.
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        Self::NotFound {
            kind,
            id: crate::util::text::clip(id).into_owned(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Store(_) | Self::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Invalid { .. } | Self::StorageFull { .. } => StatusCode::BAD_REQUEST,
            Self::TooManyBatches(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            Self::Store(_) | Self::Storage(_) => Some("job_store_unavailable"),
            Self::NotFound { .. } => None,
            Self::Invalid { .. } => Some("invalid_request"),
            Self::TooLarge { .. } => Some("file_too_large"),
            Self::StorageFull { .. } => Some("file_storage_limit_exceeded"),
            Self::TooManyBatches(_) => Some("too_many_open_batches"),
            Self::Stalled(_) => Some("request_timeout"),
            Self::Conflict(_) => Some("invalid_state"),
        }
    }
}

impl IntoResponse for JobsError {
    fn into_response(self) -> Response {
        if let Self::Store(source) = &self {
            tracing::warn!(error = %source, "job store call failed");
        }
        if let Self::Storage(source) = &self {
            tracing::warn!(error = %source, "file storage call failed");
        }
        let kind = match self.status() {
            StatusCode::SERVICE_UNAVAILABLE => "server_error",
            StatusCode::TOO_MANY_REQUESTS => "requests",
            _ => "invalid_request_error",
        };
        let param = match &self {
            Self::Invalid { param, .. } => *param,
            _ => None,
        };
        let body = error_body(&self.to_string(), kind, param, self.code());
        let mut response = json_response(self.status(), body);
        if matches!(self, Self::Store(_) | Self::Storage(_)) {
            set_retry_after(response.headers_mut(), std::time::Duration::from_secs(1));
        }
        if matches!(self, Self::TooManyBatches(_)) {
            // Batches take minutes to hours; a client's back-off starts here.
            set_retry_after(response.headers_mut(), std::time::Duration::from_secs(60));
        }
        if matches!(
            self,
            Self::TooLarge { .. } | Self::StorageFull { .. } | Self::Stalled(_)
        ) {
            // The rest of the upload may still be on its way.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
