//! Which API call a path is. OpenAI's paths (`/v1/...`) and Azure OpenAI's
//! (`/openai/deployments/{name}/...`, `/openai/responses`, `/openai/v1/...`)
//! name the same calls; an Azure deployment path also names the model.

use crate::vocab::Endpoint;

pub enum ApiCall<'a> {
    /// A call the dispatcher proxies; `path_model` when the path names the
    /// model (an Azure deployment).
    Proxy {
        endpoint: Endpoint,
        path_model: Option<&'a str>,
    },
    /// A call on a stored response: `rest` is `{id}`, `{id}/input_items` or
    /// `{id}/cancel`.
    Stored { id: &'a str, rest: &'a str },
}

pub fn classify(path: &str) -> Option<ApiCall<'_>> {
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let (name, api_path) = rest.split_once('/')?;
        let endpoint = Endpoint::from_api_path(api_path)?;
        return (!name.is_empty()).then_some(ApiCall::Proxy {
            endpoint,
            path_model: Some(name),
        });
    }
    let api_path = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/openai/v1/"))
        .or_else(|| path.strip_prefix("/openai/"))?;
    if let Some(endpoint) = Endpoint::from_api_path(api_path) {
        return Some(ApiCall::Proxy {
            endpoint,
            path_model: None,
        });
    }
    let rest = api_path.strip_prefix("responses/")?;
    let id = rest.split('/').next()?;
    Some(ApiCall::Stored { id, rest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(path: &str) -> Option<(Endpoint, Option<&str>)> {
        match classify(path)? {
            ApiCall::Proxy {
                endpoint,
                path_model,
            } => Some((endpoint, path_model)),
            ApiCall::Stored { .. } => None,
        }
    }

    #[test]
    fn openai_and_azure_paths_name_the_same_calls() {
        use Endpoint::*;
        assert_eq!(
            proxied("/v1/chat/completions"),
            Some((ChatCompletions, None))
        );
        assert_eq!(proxied("/openai/v1/embeddings"), Some((Embeddings, None)));
        assert_eq!(proxied("/openai/responses"), Some((Responses, None)));
        assert_eq!(
            proxied("/openai/deployments/gpt-4o/chat/completions"),
            Some((ChatCompletions, Some("gpt-4o")))
        );
        assert_eq!(
            proxied("/openai/deployments/whisper/audio/transcriptions"),
            Some((AudioTranscriptions, Some("whisper")))
        );
        assert!(proxied("/openai/deployments//chat/completions").is_none());
        assert!(proxied("/openai/deployments/x/files").is_none());
        assert!(proxied("/v2/chat/completions").is_none());
        assert!(matches!(
            classify("/openai/v1/responses/resp_1/input_items"),
            Some(ApiCall::Stored {
                id: "resp_1",
                rest: "resp_1/input_items"
            })
        ));
    }
}
