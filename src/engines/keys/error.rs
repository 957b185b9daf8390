//! What a keys-store call can fail with; the admin API maps each to a status.

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyStoreError {
    /// The store failed or did not answer in time: worth retrying.
    #[error("keys store: {0}")]
    Unavailable(String),
    /// The store cannot be opened at all (a bad path, a broken file).
    #[error("keys store: cannot open: {0}")]
    Open(String),
    #[error("No key with id `{0}`.")]
    NotFound(String),
    #[error("A key named `{0}` already exists.")]
    DuplicateName(String),
    /// Another writer changed the key between our read and our write, more
    /// often than a few retries could absorb.
    #[error("The key `{0}` was changed concurrently; please retry.")]
    Conflict(String),
    /// A field of the key is out of bounds; `param` names it.
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<String>,
    },
    /// The gateway's validation refused the key set the change would make.
    #[error("{0}")]
    Rejected(String),
    #[error("The keys store holds its maximum of {0} keys; revoke some first.")]
    Full(usize),
    /// The operating system's random source failed; no key can be made safely.
    #[error("no secure random numbers: {0}")]
    Random(String),
}

/// A bad request body; `param` names the field when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub message: String,
    pub param: Option<String>,
}

impl FieldError {
    pub(super) fn at(param: &str, message: String) -> Self {
        Self {
            message,
            param: Some(crate::util::text::clip(param).into_owned()),
        }
    }
}

impl From<FieldError> for KeyStoreError {
    fn from(error: FieldError) -> Self {
        Self::Invalid {
            message: error.message,
            param: error.param,
        }
    }
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Unavailable(error.to_string())
}
