//! Which OpenAI endpoint a call is for, and a call on a stored object:
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
    /// `POST /responses/input_tokens`: the input's token count.
    ResponsesInputTokens,
    /// `POST /responses/compact`: a conversation compacted.
    ResponsesCompact,
    ImageEdits,
    ImageVariations,
    /// `POST /realtime/client_secrets`: a short-lived key a browser opens a
    /// Realtime session with, made with the deployment's key.
    RealtimeClientSecrets,
    /// `POST /realtime/sessions`: the same, as the beta API makes it.
    RealtimeSessions,
    /// `GET /realtime`: a Realtime session, a WebSocket held open to a
    /// deployment.
    Realtime,
    /// A call on an object stored upstream (`GET /responses/{id}`,
    /// `POST /conversations`, `GET /vector_stores`...): routed by the id, or
    /// for a create or a list by the caller's home model (see
    /// `vocab::resource`).
    Stored,
}

impl Endpoint {
    /// The endpoints a model is named for, in declaration order (their
    /// upstream URLs are parsed once per model at start-up).
    pub const ALL: [Self; 16] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
        Self::Moderations,
        Self::ImageGenerations,
        Self::AudioSpeech,
        Self::AudioTranscriptions,
        Self::AudioTranslations,
        Self::ResponsesInputTokens,
        Self::ResponsesCompact,
        Self::ImageEdits,
        Self::ImageVariations,
        Self::RealtimeClientSecrets,
        Self::RealtimeSessions,
        Self::Realtime,
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
            Self::Responses | Self::Stored => "responses",
            Self::Moderations => "moderations",
            Self::ImageGenerations => "images/generations",
            Self::AudioSpeech => "audio/speech",
            Self::AudioTranscriptions => "audio/transcriptions",
            Self::AudioTranslations => "audio/translations",
            Self::ResponsesInputTokens => "responses/input_tokens",
            Self::ResponsesCompact => "responses/compact",
            Self::ImageEdits => "images/edits",
            Self::ImageVariations => "images/variations",
            Self::RealtimeClientSecrets => "realtime/client_secrets",
            Self::RealtimeSessions => "realtime/sessions",
            Self::Realtime => "realtime",
        }
    }

    /// Under the Responses API, which Azure serves per resource (the model
    /// in the body) rather than per deployment path.
    pub fn is_responses(self) -> bool {
        matches!(
            self,
            Self::Responses | Self::ResponsesInputTokens | Self::ResponsesCompact
        )
    }

    /// Whether the answer may name a stored response to continue
    /// (`previous_response_id`, `conversation`).
    pub fn continues_stored(self) -> bool {
        self.is_responses()
    }

    /// Whether the call produces no tokens of its own: a count, or a call
    /// on a stored object.
    pub fn makes_no_tokens(self) -> bool {
        matches!(
            self,
            Self::ResponsesInputTokens
                | Self::Stored
                | Self::RealtimeClientSecrets
                | Self::RealtimeSessions
        )
    }

    /// The HTTP method the endpoint is called with (a WebSocket opens with
    /// a GET; everything else is a POST).
    pub fn method(self) -> http::Method {
        match self {
            Self::Realtime => http::Method::GET,
            _ => http::Method::POST,
        }
    }

    /// Whether the body is `multipart/form-data` (an uploaded file) rather than JSON.
    pub fn takes_multipart(self) -> bool {
        matches!(
            self,
            Self::AudioTranscriptions
                | Self::AudioTranslations
                | Self::ImageEdits
                | Self::ImageVariations
        )
    }

    /// Whether the answer may carry no `usage` for work that costs no tokens
    /// (moderations, images and audio on older API versions): metered as 0
    /// tokens rather than estimated.
    pub fn usage_optional(self) -> bool {
        matches!(
            self,
            Self::Moderations
                | Self::ImageGenerations
                | Self::ImageEdits
                | Self::ImageVariations
                | Self::AudioSpeech
                | Self::AudioTranscriptions
                | Self::AudioTranslations
        )
    }
}

/// A call on a stored object: its kind, its method, the path below the API
/// root (`responses/{id}/input_items`, `conversations/{id}/items`, or the
/// collection itself for a create or a list) and the client's query.
#[derive(Clone, Debug)]
pub struct StoredCall {
    pub resource: &'static super::Resource,
    pub method: http::Method,
    pub path: std::sync::Arc<str>,
    /// Without `api-version`, which only the gateway's own Azure paths take.
    pub query: Option<std::sync::Arc<str>>,
}
