//! Where a request for an endpoint goes, per provider:
//! - OpenAI: `{base_url}/{path}`, model rewritten only when `model_map` renames it.
//! - Azure classic: `{base_url}/openai/deployments/{deployment}/{path}?api-version=V`;
//!   the Responses API has no deployment segment and names it in `model` instead.
//! - Azure v1 (`api_version = "v1"`): `{base_url}/openai/v1/{path}`, `model` = deployment.
//! - Calls on a stored response: the Responses URL plus `/{id}[/input_items|/cancel]`.
//! - The Files and Batch APIs (batches forwarded upstream): `api_url`.
//! - Anthropic: `{base_url}/v1/messages` for chat (the body translated by
//!   the client); it has no other endpoint here.

use super::{Endpoint, StoredCall};
use crate::config::{DeploymentConfig, Provider};

pub enum Target {
    OpenAi {
        base: String,
    },
    AzureClassic {
        base: String,
        api_version: String,
    },
    AzureV1 {
        base: String,
    },
    /// Anthropic's Messages API, `{base_url}/v1/messages`: chat only.
    Anthropic {
        base: String,
    },
    Mock,
}

impl Target {
    pub fn new(config: &DeploymentConfig) -> Self {
        let base = config.base_url.trim_end_matches('/').to_owned();
        match (config.provider, config.api_version.as_deref()) {
            (Provider::Openai, _) => Self::OpenAi { base },
            (Provider::Azure, Some("v1")) => Self::AzureV1 { base },
            (Provider::Azure, version) => Self::AzureClassic {
                base,
                api_version: version.unwrap_or_default().to_owned(),
            },
            (Provider::Anthropic, _) => Self::Anthropic { base },
            (Provider::Mock, _) => Self::Mock,
        }
    }

    pub fn url(&self, endpoint: Endpoint, upstream_model: &str) -> String {
        let path = endpoint.path();
        if endpoint == Endpoint::Realtime {
            return self.realtime_url(upstream_model);
        }
        match self {
            Self::OpenAi { base } => format!("{base}/{path}"),
            Self::AzureV1 { base } => format!("{base}/openai/v1/{path}"),
            Self::AzureClassic { base, api_version } if endpoint.is_responses() => {
                format!("{base}/openai/{path}?api-version={api_version}")
            }
            Self::AzureClassic { base, api_version } => {
                format!(
                    "{base}/openai/deployments/{upstream_model}/{path}?api-version={api_version}"
                )
            }
            Self::Anthropic { base } => format!("{base}/v1/messages"),
            Self::Mock => String::new(),
        }
    }

    /// A Realtime session's URL (over HTTP; the WebSocket uses ws/wss):
    /// the model in the query, as Azure's classic path names its deployment.
    fn realtime_url(&self, upstream_model: &str) -> String {
        let model: String = form_urlencoded::byte_serialize(upstream_model.as_bytes()).collect();
        match self {
            Self::OpenAi { base } => format!("{base}/realtime?model={model}"),
            Self::AzureV1 { base } => format!("{base}/openai/v1/realtime?model={model}"),
            Self::AzureClassic { base, api_version } => {
                format!("{base}/openai/realtime?api-version={api_version}&deployment={model}")
            }
            // Never called (Anthropic serves chat only), but parsed once.
            Self::Anthropic { base } => format!("{base}/v1/messages"),
            Self::Mock => String::new(),
        }
    }

    /// Where a call on a stored object goes: its path below the API root
    /// (Azure's `openai/` prefix and `api-version` added), and the
    /// client's query after Azure's.
    pub fn stored_url(&self, call: &StoredCall) -> String {
        let path = &call.path;
        let (mut url, joiner) = match self {
            Self::OpenAi { base } => (format!("{base}/{path}"), '?'),
            Self::AzureV1 { base } => (format!("{base}/openai/v1/{path}"), '?'),
            Self::AzureClassic { base, api_version } => (
                format!("{base}/openai/{path}?api-version={api_version}"),
                '&',
            ),
            Self::Anthropic { .. } | Self::Mock => return String::new(),
        };
        if let Some(query) = &call.query {
            url.push(joiner);
            url.push_str(query);
        }
        url
    }

    /// Where a call on the provider's Files or Batch API goes: `path` is
    /// below the API root (`files`, `files/{id}/content`, `batches/{id}`),
    /// the same for OpenAI and Azure, which adds its `openai/` prefix and
    /// (classic) its `api-version`. `None` for the mock, which has neither.
    pub fn api_url(&self, path: &str) -> Option<String> {
        match self {
            Self::OpenAi { base } => Some(format!("{base}/{path}")),
            Self::AzureV1 { base } => Some(format!("{base}/openai/v1/{path}")),
            Self::AzureClassic { base, api_version } => {
                Some(format!("{base}/openai/{path}?api-version={api_version}"))
            }
            Self::Anthropic { .. } | Self::Mock => None,
        }
    }

    /// A cheap authenticated GET that proves the deployment answers.
    pub fn probe_url(&self) -> Option<String> {
        match self {
            Self::OpenAi { base } => Some(format!("{base}/models")),
            Self::AzureV1 { base } => Some(format!("{base}/openai/v1/models")),
            Self::AzureClassic { base, api_version } => {
                Some(format!("{base}/openai/models?api-version={api_version}"))
            }
            Self::Anthropic { base } => Some(format!("{base}/v1/models")),
            Self::Mock => None,
        }
    }

    /// Whether the body's `model` must carry the upstream name.
    pub fn model_in_body(&self, endpoint: Endpoint) -> bool {
        match self {
            Self::OpenAi { .. } | Self::AzureV1 { .. } | Self::Anthropic { .. } => true,
            Self::AzureClassic { .. } => endpoint.is_responses(),
            Self::Mock => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_batches_urls_per_provider() {
        let openai = Target::OpenAi {
            base: "https://api.openai.com/v1".into(),
        };
        let classic = Target::AzureClassic {
            base: "https://r.openai.azure.com".into(),
            api_version: "2024-10-21".into(),
        };
        let v1 = Target::AzureV1 {
            base: "https://r.openai.azure.com".into(),
        };
        assert_eq!(
            openai.api_url("files/f1/content").as_deref(),
            Some("https://api.openai.com/v1/files/f1/content")
        );
        assert_eq!(
            classic.api_url("batches/b1/cancel").as_deref(),
            Some("https://r.openai.azure.com/openai/batches/b1/cancel?api-version=2024-10-21")
        );
        assert_eq!(
            v1.api_url("files").as_deref(),
            Some("https://r.openai.azure.com/openai/v1/files")
        );
        assert_eq!(Target::Mock.api_url("files"), None);
    }
}
