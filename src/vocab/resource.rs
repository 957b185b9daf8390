//! The objects a provider account keeps: a stored response, a conversation,
//! a stored chat completion, a vector store... Each lives on the deployment
//! that created it, so every later call naming its id goes there. One table
//! describes them all, so one mechanism routes them (the request reader
//! reads the id, the dispatcher pins what a create returns) instead of a
//! hand-made route per resource.

/// How a new object of a kind comes to exist through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// By a model call (`POST /responses`, `POST /chat/completions` with
    /// `store: true`): the dispatcher pins the answer's id.
    ByModelCall,
    /// `POST /{collection}`, naming no model: made on the deployment of the
    /// caller's home model (`[responses] home_model`).
    Plain,
    /// `POST /{collection}` whose `model` names a base model (fine-tuning):
    /// made on a deployment of that model when the gateway serves it, else
    /// as `Plain`.
    WithModel,
}

/// One kind of stored object.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// The path of its collection below the API root (`conversations`).
    pub collection: &'static str,
    /// How OpenAI names one in its 404 message (`Conversation`).
    pub noun: &'static str,
    /// The request field that names one in another call
    /// (`previous_response_id`, `conversation`), for a 404's `param`.
    pub param: Option<&'static str>,
    pub creation: Creation,
    /// `GET /{collection}` lists them (only the caller's are shown).
    pub listed: bool,
}

impl Resource {
    /// Whether a call on the collection itself goes through the gateway's
    /// stored-object path (a create or a list), rather than a model call.
    pub fn serves_collection(&self, method: &http::Method) -> bool {
        match *method {
            http::Method::POST => self.creation != Creation::ByModelCall,
            http::Method::GET => self.listed,
            _ => false,
        }
    }
}

pub const RESPONSES: Resource = Resource {
    collection: "responses",
    noun: "Response",
    param: Some("previous_response_id"),
    creation: Creation::ByModelCall,
    listed: false,
};

pub const CHAT_COMPLETIONS: Resource = Resource {
    collection: "chat/completions",
    noun: "Chat completion",
    param: None,
    creation: Creation::ByModelCall,
    listed: true,
};

pub const CONVERSATIONS: Resource = Resource {
    collection: "conversations",
    noun: "Conversation",
    param: Some("conversation"),
    creation: Creation::Plain,
    listed: false,
};

/// Every kind of stored object, longest collection path first so a path
/// is matched by the most specific one.
pub const RESOURCES: [&Resource; 7] = [
    &Resource {
        collection: "fine_tuning/jobs",
        noun: "Fine-tuning job",
        param: None,
        creation: Creation::WithModel,
        listed: true,
    },
    &CHAT_COMPLETIONS,
    &CONVERSATIONS,
    &Resource {
        collection: "vector_stores",
        noun: "Vector store",
        param: None,
        creation: Creation::Plain,
        listed: true,
    },
    &Resource {
        collection: "containers",
        noun: "Container",
        param: None,
        creation: Creation::Plain,
        listed: true,
    },
    &Resource {
        collection: "evals",
        noun: "Eval",
        param: None,
        creation: Creation::Plain,
        listed: true,
    },
    &RESPONSES,
];

impl Resource {
    /// The kind of object `api_path` (below the API root) is a call on, with
    /// the rest of the path (`{id}`, `{id}/items/{item}`, or empty for the
    /// collection itself).
    pub fn of_path(api_path: &str) -> Option<(&'static Self, &str)> {
        RESOURCES.into_iter().find_map(|resource| {
            let rest = api_path.strip_prefix(resource.collection)?;
            match rest.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => Some((resource, rest)),
                None if rest.is_empty() => Some((resource, "")),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_its_kind_and_the_rest() {
        let of = |path| Resource::of_path(path).map(|(r, rest)| (r.collection, rest));
        assert_eq!(of("conversations"), Some(("conversations", "")));
        assert_eq!(
            of("conversations/conv_1/items/msg_2"),
            Some(("conversations", "conv_1/items/msg_2"))
        );
        assert_eq!(
            of("chat/completions/chatcmpl-1/messages"),
            Some(("chat/completions", "chatcmpl-1/messages"))
        );
        assert_eq!(
            of("fine_tuning/jobs/ftjob-1/events"),
            Some(("fine_tuning/jobs", "ftjob-1/events"))
        );
        assert_eq!(of("conversationsx"), None);
        assert_eq!(of("conversations/"), None);
        assert_eq!(of("files/file-1"), None);
    }
}
