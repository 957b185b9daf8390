//! Which API call a path is. OpenAI's paths (`/v1/...`) and Azure OpenAI's
//! (`/openai/deployments/{name}/...`, `/openai/responses`, `/openai/v1/...`)
//! name the same calls; an Azure deployment path also names the model.

use crate::vocab::{Endpoint, Resource};

pub enum ApiCall<'a> {
    /// A call the dispatcher proxies; `path_model` when the path names the
    /// model (an Azure deployment).
    Proxy {
        endpoint: Endpoint,
        path_model: Option<&'a str>,
    },
    /// A call on a stored object (`id` is the first segment of `rest`,
    /// the path below the collection), or on a collection itself (a create
    /// or a list: `id` is `None`). `api_path` is the whole path below the
    /// API root.
    Stored {
        resource: &'static Resource,
        id: Option<&'a str>,
        api_path: &'a str,
    },
}

pub fn classify<'a>(method: &http::Method, path: &'a str) -> Option<ApiCall<'a>> {
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
    if let Some(endpoint) = Endpoint::from_api_path(api_path)
        && *method == endpoint.method()
    {
        return Some(ApiCall::Proxy {
            endpoint,
            path_model: None,
        });
    }
    let (resource, rest) = Resource::of_path(api_path)?;
    if rest.is_empty() {
        return resource
            .serves_collection(method)
            .then_some(ApiCall::Stored {
                resource,
                id: None,
                api_path,
            });
    }
    let id = rest.split('/').next().filter(|id| !id.is_empty())?;
    Some(ApiCall::Stored {
        resource,
        id: Some(id),
        api_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(path: &str) -> Option<(Endpoint, Option<&str>)> {
        match classify(&http::Method::POST, path)? {
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
        assert_eq!(
            proxied("/v1/responses/input_tokens"),
            Some((ResponsesInputTokens, None))
        );
        assert_eq!(proxied("/openai/v1/images/edits"), Some((ImageEdits, None)));
    }

    fn stored(method: http::Method, path: &str) -> Option<(&'static str, Option<&str>, &str)> {
        match classify(&method, path)? {
            ApiCall::Stored {
                resource,
                id,
                api_path,
            } => Some((resource.collection, id, api_path)),
            ApiCall::Proxy { .. } => None,
        }
    }

    #[test]
    fn stored_objects_and_their_collections_are_routed_by_kind() {
        use http::Method;
        assert_eq!(
            stored(Method::GET, "/openai/v1/responses/resp_1/input_items"),
            Some(("responses", Some("resp_1"), "responses/resp_1/input_items"))
        );
        assert_eq!(
            stored(Method::POST, "/v1/conversations"),
            Some(("conversations", None, "conversations"))
        );
        assert_eq!(
            stored(Method::DELETE, "/v1/conversations/conv_1/items/msg_1"),
            Some((
                "conversations",
                Some("conv_1"),
                "conversations/conv_1/items/msg_1"
            ))
        );
        // The list of stored chat completions; a POST there is a model call.
        assert_eq!(
            stored(Method::GET, "/v1/chat/completions"),
            Some(("chat/completions", None, "chat/completions"))
        );
        assert_eq!(
            stored(Method::POST, "/v1/chat/completions/chatcmpl-1"),
            Some((
                "chat/completions",
                Some("chatcmpl-1"),
                "chat/completions/chatcmpl-1"
            ))
        );
        // No list of conversations or responses; no create without a model.
        assert_eq!(stored(Method::GET, "/v1/conversations"), None);
        assert_eq!(stored(Method::GET, "/v1/responses"), None);
        assert_eq!(stored(Method::POST, "/v1/vector_stores/"), None);
        // A fixed sub-path is an endpoint, not an id.
        assert!(matches!(
            classify(&Method::POST, "/v1/responses/compact"),
            Some(ApiCall::Proxy {
                endpoint: Endpoint::ResponsesCompact,
                ..
            })
        ));
    }
}
