//! A configured upstream deployment, resolved once at start-up into what each
//! request needs: URL prefix, auth header, model mapping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::mock::MockUpstream;
use super::target::Target;
use crate::config::{DeploymentConfig, Provider};

pub struct Deployment {
    pub name: Arc<str>,
    /// `name` as a ready `x-sluice-deployment` value.
    pub name_header: HeaderValue,
    pub provider: Provider,
    pub priority: i32,
    pub weight: u32,
    /// Deadline for the first byte and for each gap between body chunks.
    pub timeout: Duration,
    pub(super) target: Target,
    pub(super) auth: Option<(http::HeaderName, HeaderValue)>,
    pub(super) mock: Option<MockUpstream>,
    model_map: HashMap<String, String>,
}

impl Deployment {
    pub fn from_config(config: &DeploymentConfig) -> Result<Self, String> {
        let auth = match (&config.api_key, config.provider) {
            (Some(key), Provider::Openai) => Some((
                http::header::AUTHORIZATION,
                sensitive(&format!("Bearer {key}"))?,
            )),
            (Some(key), Provider::Azure) => {
                Some((http::HeaderName::from_static("api-key"), sensitive(key)?))
            }
            _ => None,
        };
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            name_header: HeaderValue::from_str(&config.name)
                .map_err(|_| "name has characters not allowed in a header")?,
            provider: config.provider,
            priority: config.priority,
            weight: config.weight,
            timeout: config.timeout,
            target: Target::new(config),
            auth,
            mock: (config.provider == Provider::Mock).then(|| MockUpstream::new(&config.mock)),
            model_map: config.model_map.clone(),
        })
    }

    /// The model name (or Azure deployment name) the upstream knows this model by.
    pub fn upstream_model<'a>(&'a self, client_model: &'a str) -> &'a str {
        self.model_map
            .get(client_model)
            .map_or(client_model, String::as_str)
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| "api_key has characters not allowed in a header")?;
    header.set_sensitive(true);
    Ok(header)
}
