//! Which API a call came in by: OpenAI's (every path but one) or
//! Anthropic's Messages API, which the Messages adapter translates. The
//! adapter marks its calls with this as a request extension; the ledger
//! records it.

/// The API a client called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Api {
    #[default]
    OpenAi,
    Anthropic,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }

    /// The value `as_str` gave; anything else (a row from before the
    /// column) is OpenAI's, the only API there was.
    pub fn parse(text: &str) -> Self {
        match text {
            "anthropic" => Self::Anthropic,
            _ => Self::OpenAi,
        }
    }
}
