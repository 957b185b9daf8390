//! What a bucket limits: its scope (key, org, model, deployment) and kind
//! (requests or tokens).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Key,
    Org,
    Model,
    Deployment,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Org => "org",
            Self::Model => "model",
            Self::Deployment => "deployment",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Requests,
    Tokens,
}

impl Kind {
    /// OpenAI's `type` for a rate-limit error of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }

    pub fn per_minute(self) -> &'static str {
        match self {
            Self::Requests => "requests per min (RPM)",
            Self::Tokens => "tokens per min (TPM)",
        }
    }
}
