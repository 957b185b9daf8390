//! The `auto` router: tiers cheapest first; a request goes to the first tier
//! whose rules it fits (prompt size, tools, images, keywords); the last tier
//! takes the rest.

use serde_json::{Map, Value};

use crate::config::{AutoConfig, AutoTier};

pub struct AutoRouter {
    config: AutoConfig,
    /// Keywords lower-cased once.
    keywords: Vec<Vec<String>>,
}

impl AutoRouter {
    pub fn new(config: AutoConfig) -> Self {
        let keywords = config
            .tiers
            .iter()
            .map(|t| t.keywords.iter().map(|k| k.to_lowercase()).collect())
            .collect();
        Self { config, keywords }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The tier models whose rules count prompt tokens.
    pub fn counted_models(&self) -> impl Iterator<Item = &str> {
        self.config
            .tiers
            .iter()
            .filter(|tier| tier.max_prompt_tokens.is_some())
            .map(|tier| tier.model.as_str())
    }

    /// The first tier the request fits. `prompt_tokens` gives the prompt's
    /// tokens for a tier's model (counted beforehand, off the async threads
    /// when large).
    pub fn classify(
        &self,
        request: &Map<String, Value>,
        prompt_tokens: impl Fn(&str) -> u64,
    ) -> &str {
        let text = prompt_text(request).to_lowercase();
        let has_tools = request
            .get("tools")
            .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
        let has_images = text_has_images(request);
        let last = self.config.tiers.len().saturating_sub(1);
        for (index, tier) in self.config.tiers.iter().enumerate() {
            if index == last || self.fits(index, tier, &text, has_tools, has_images, &prompt_tokens)
            {
                return &tier.model;
            }
        }
        self.config.tiers.last().map_or("", |t| t.model.as_str())
    }

    fn fits(
        &self,
        index: usize,
        tier: &AutoTier,
        text: &str,
        has_tools: bool,
        has_images: bool,
        prompt_tokens: &impl Fn(&str) -> u64,
    ) -> bool {
        if (has_tools && !tier.tools) || (has_images && !tier.images) {
            return false;
        }
        if self.keywords[index]
            .iter()
            .any(|k| text.contains(k.as_str()))
        {
            return false;
        }
        tier.max_prompt_tokens
            .is_none_or(|limit| prompt_tokens(&tier.model) <= limit)
    }
}

/// All message text, for keyword rules.
fn prompt_text(request: &Map<String, Value>) -> String {
    let mut text = String::new();
    let mut add = |value: &Value| {
        if let Some(s) = value.as_str() {
            text.push_str(s);
            text.push('\n');
        }
    };
    for message in request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match message.get("content") {
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text"))
                .for_each(&mut add),
            Some(content) => add(content),
            None => {}
        }
    }
    for field in ["prompt", "input", "instructions"] {
        if let Some(value) = request.get(field) {
            add(value);
        }
    }
    text
}

fn text_has_images(request: &Map<String, Value>) -> bool {
    request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .any(|part| {
            part.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("image"))
        })
}
