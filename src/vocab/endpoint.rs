//! Which OpenAI endpoint a call is for, and a call on a stored response:
//! named by the request reader, read by routing, tokens, limits, the cache
//! and the upstream client.

/// The OpenAI endpoints Sluice proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Moderations,
    ImageGenerations,
    AudioSpeech,
    AudioTranscriptions,
    AudioTranslations,
    /// A call on a response stored upstream (`GET`/`DELETE /responses/{id}`,
    /// `input_items`, `cancel`): no model in the body, routed by the id.
    StoredResponse,
}

impl Endpoint {
    /// The endpoints a model is named for, in declaration order (their
    /// upstream URLs are parsed once per model at start-up).
    pub const ALL: [Self; 9] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
        Self::Moderations,
        Self::ImageGenerations,
        Self::AudioSpeech,
        Self::AudioTranscriptions,
        Self::AudioTranslations,
    ];

    /// The endpoint for a path below the API root (`chat/completions`).
    pub fn from_api_path(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|endpoint| endpoint.path() == path)
    }

    /// Path below the API root, shared by OpenAI and Azure.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses | Self::StoredResponse => "responses",
            Self::Moderations => "moderations",
            Self::ImageGenerations => "images/generations",
            Self::AudioSpeech => "audio/speech",
            Self::AudioTranscriptions => "audio/transcriptions",
            Self::AudioTranslations => "audio/translations",
        }
    }

    /// Whether the body is `multipart/form-data` (an uploaded file) rather than JSON.
    pub fn takes_multipart(self) -> bool {
        matches!(self, Self::AudioTranscriptions | Self::AudioTranslations)
    }

    /// Whether the answer may carry no `usage` for work that costs no tokens
    /// (moderations, images and audio on older API versions): metered as 0
    /// tokens rather than estimated.
    pub fn usage_optional(self) -> bool {
        matches!(
            self,
            Self::Moderations
                | Self::ImageGenerations
                | Self::AudioSpeech
                | Self::AudioTranscriptions
                | Self::AudioTranslations
        )
    }
}

/// A call on a stored response: its method, the path below `responses/`
/// (`{id}`, `{id}/input_items`, `{id}/cancel`) and the client's query.
#[derive(Clone, Debug)]
pub struct StoredCall {
    pub method: http::Method,
    pub path: std::sync::Arc<str>,
    /// Without `api-version`, which only the gateway's own Azure paths take.
    pub query: Option<std::sync::Arc<str>>,
}
