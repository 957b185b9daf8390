//! Canary / A-B splits: a stable hash of `user` (else the key) picks a
//! weighted variant, so a user keeps seeing the same one.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::stable_hash;
use crate::config::{SplitConfig, SplitVariant};

pub struct Split {
    pub name: Arc<str>,
    variants: Vec<Variant>,
    total: u64,
}

pub struct Variant {
    pub name: Arc<str>,
    pub model: String,
    weight: u64,
    temperature: Option<f64>,
    system_prompt: Option<String>,
}

impl Split {
    pub fn new(config: &SplitConfig) -> Self {
        let variants: Vec<Variant> = config.variants.iter().map(Variant::new).collect();
        Self {
            name: Arc::from(config.name.as_str()),
            total: variants.iter().map(|v| v.weight).sum::<u64>().max(1),
            variants,
        }
    }

    pub fn pick(&self, sticky: &str) -> &Variant {
        let mut draw = stable_hash(&format!("{}\0{sticky}", self.name)) % self.total;
        for variant in &self.variants {
            if draw < variant.weight {
                return variant;
            }
            draw -= variant.weight;
        }
        &self.variants[self.variants.len() - 1]
    }
}

impl Variant {
    fn new(config: &SplitVariant) -> Self {
        Self {
            name: Arc::from(config.name.as_deref().unwrap_or(&config.model)),
            model: config.model.clone(),
            weight: u64::from(config.weight),
            temperature: config.temperature,
            system_prompt: config.system_prompt.clone(),
        }
    }

    /// Whether the variant overrides anything in the request.
    pub fn changes_request(&self) -> bool {
        self.temperature.is_some() || self.system_prompt.is_some()
    }

    /// Applies the variant's overrides.
    pub fn apply(&self, request: &mut Map<String, Value>) {
        if let Some(temperature) = self.temperature {
            request.insert("temperature".into(), json!(temperature));
        }
        if let Some(prompt) = &self.system_prompt
            && let Some(Value::Array(messages)) = request.get_mut("messages")
        {
            messages.retain(|m| m["role"] != "system" && m["role"] != "developer");
            messages.insert(0, json!({"role": "system", "content": prompt}));
        }
    }
}
