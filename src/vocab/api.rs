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

/// A Messages call's own bytes, carried beside its chat translation (a
/// request extension only the Messages adapter sets): an Anthropic
/// deployment is sent these as they came, and its answer relayed to the
/// client untranslated, so nothing the translation cannot say is lost.
#[derive(Debug, Clone)]
pub struct MessagesBody {
    pub body: bytes::Bytes,
    /// The client's `anthropic-beta`, sent on with the relayed call.
    pub beta: Option<http::HeaderValue>,
    /// Set when the call has no faithful chat translation (it uses a field
    /// a chat completion cannot say): why. Only an Anthropic deployment
    /// may serve it; any other refuses it with this reason.
    pub untranslatable: Option<std::sync::Arc<str>>,
}
