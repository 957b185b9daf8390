//! A configured upstream deployment, resolved once at start-up into what each
//! request needs: URL prefix, auth header, model mapping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::provider::{LocalProvider, Providers};
use super::target::Target;
use super::{Endpoint, StoredCall};
use crate::config::{BatchMode, DeploymentConfig, Provider};

pub struct Deployment {
    pub name: Arc<str>,
    /// `name` as a ready `x-sluice-deployment` value.
    pub name_header: HeaderValue,
    pub provider: Provider,
    pub priority: i32,
    pub weight: u32,
    /// Deadline for the first byte and for each gap between body chunks.
    pub timeout: Duration,
    /// Whether batches for its models are forwarded to its Batch API.
    pub batch: BatchMode,
    /// The upstream's host and port (`server.address` on trace spans);
    /// `None` for an in-process provider.
    pub address: Option<(Arc<str>, u16)>,
    pub(super) target: Target,
    pub(super) auth: Option<(http::HeaderName, HeaderValue)>,
    /// Answers in-process instead of over HTTP (the mock).
    pub(super) local: Option<Arc<dyn LocalProvider>>,
    model_map: HashMap<String, String>,
    /// Each served model's upstream URLs, by upstream name and endpoint,
    /// parsed once rather than on every call.
    urls: HashMap<String, [http::Uri; Endpoint::ALL.len()]>,
}

impl Deployment {
    pub fn from_config(config: &DeploymentConfig, providers: &Providers) -> Result<Self, String> {
        let auth = match (&config.api_key, config.provider) {
            (Some(key), Provider::Openai) => Some((
                http::header::AUTHORIZATION,
                sensitive(&format!("Bearer {key}"))?,
            )),
            (Some(key), Provider::Azure) => {
                Some((http::HeaderName::from_static("api-key"), sensitive(key)?))
            }
            (Some(key), Provider::Anthropic) => {
                Some((http::HeaderName::from_static("x-api-key"), sensitive(key)?))
            }
            _ => None,
        };
        let target = Target::new(config);
        let local = providers.local(config)?;
        let mut urls = HashMap::new();
        if local.is_none() {
            for model in &config.models {
                let upstream = config.model_map.get(model).unwrap_or(model);
                urls.insert(upstream.clone(), parsed_urls(&target, upstream)?);
            }
        }
        let address = urls.values().next().and_then(|urls| {
            let uri = &urls[0];
            let default_port = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            Some((
                Arc::from(uri.host()?),
                uri.port_u16().unwrap_or(default_port),
            ))
        });
        Ok(Self {
            address,
            name: Arc::from(config.name.as_str()),
            name_header: HeaderValue::from_str(&config.name)
                .map_err(|_| "name has characters not allowed in a header")?,
            provider: config.provider,
            priority: config.priority,
            weight: config.weight,
            timeout: config.timeout,
            batch: config.batch,
            target,
            auth,
            local,
            model_map: config.model_map.clone(),
            urls,
        })
    }

    /// Where a call for `endpoint` and this upstream model name goes.
    pub(super) fn uri(
        &self,
        endpoint: Endpoint,
        upstream_model: &str,
        stored: Option<&StoredCall>,
    ) -> Result<http::Uri, String> {
        if let Some(call) = stored {
            return parse_uri(&self.target.stored_url(call));
        }
        match self.urls.get(upstream_model) {
            // `Endpoint::ALL` is in declaration order.
            Some(urls) => urls
                .get(endpoint as usize)
                .cloned()
                .ok_or_else(|| format!("no URL for {}", endpoint.path())),
            // Not a model this deployment lists (the router never sends one).
            None => parse_uri(&self.target.url(endpoint, upstream_model)),
        }
    }

    /// The URL of a Files or Batch API call (`files`, `batches/{id}`...).
    pub fn api_url(&self, path: &str) -> Result<reqwest::Url, String> {
        let url = self
            .target
            .api_url(path)
            .ok_or("the mock provider has no Files or Batch API")?;
        reqwest::Url::parse(&url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))
    }

    /// The header carrying the deployment's `api_key`, if it has one.
    pub fn auth_header(&self) -> Option<&(http::HeaderName, HeaderValue)> {
        self.auth.as_ref()
    }

    /// The model name (or Azure deployment name) the upstream knows this model by.
    pub fn upstream_model<'a>(&'a self, client_model: &'a str) -> &'a str {
        self.model_map
            .get(client_model)
            .map_or(client_model, String::as_str)
    }
}

fn parsed_urls(
    target: &Target,
    upstream_model: &str,
) -> Result<[http::Uri; Endpoint::ALL.len()], String> {
    let urls = Endpoint::ALL
        .into_iter()
        .map(|endpoint| parse_uri(&target.url(endpoint, upstream_model)))
        .collect::<Result<Vec<_>, _>>()?;
    urls.try_into()
        .map_err(|_| "one URL per endpoint".to_owned())
}

/// `url` by the URL standard (as a browser or reqwest reads it: IDNA hosts,
/// percent-encoding), then as the request line's URI.
fn parse_uri(url: &str) -> Result<http::Uri, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    http::Uri::try_from(parsed.as_str()).map_err(|e| format!("`{url}` is not a valid URI: {e}"))
}

fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| "api_key has characters not allowed in a header")?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_indexed_by_endpoint_declaration_order() {
        for (index, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(endpoint as usize, index);
        }
    }
}
