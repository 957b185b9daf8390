//! `[otel]`: OpenTelemetry traces exported over OTLP. Off until an
//! endpoint is set, in the file or by `OTEL_EXPORTER_OTLP_ENDPOINT`.
//!
//! The standard `OTEL_*` variables apply over the file, as `SLUICE__`
//! overrides do: an orchestrator that injects them (an OpenTelemetry
//! operator, a Helm chart) wins over the image's file. A variable with a
//! value Sluice does not know is ignored with a warning, as the
//! OpenTelemetry specification asks; the same mistake in the file is an
//! error. Takes effect at a restart.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

use super::duration::serde_duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    #[default]
    None,
    Gzip,
}

/// `OTEL_TRACES_SAMPLER`'s values that need no remote service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerName {
    AlwaysOn,
    AlwaysOff,
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    #[default]
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    #[serde(rename = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    /// The OTLP base URL: `/v1/traces` is appended for HTTP; gRPC uses
    /// its scheme, host and port.
    pub endpoint: Option<String>,
    /// The traces URL as it is; wins over `endpoint`.
    pub traces_endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Sent with every export (an API key for a hosted backend): redacted
    /// in `/admin/config`.
    pub headers: BTreeMap<String, String>,
    /// One export's deadline, retries included.
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
    pub compression: OtlpCompression,
    pub service_name: String,
    pub resource_attributes: BTreeMap<String, String>,
    pub sampler: SamplerName,
    /// The ratio of the `*traceidratio` samplers, 0 to 1.
    pub sampler_arg: Option<f64>,
    /// Prompts and answers on the attempt spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`): off, because they are sensitive.
    pub capture_content: bool,
    /// Each captured content attribute is cut to this many bytes.
    pub content_max_bytes: usize,
    /// Finished spans waiting for export, at most: more are dropped and
    /// counted (`sluice_trace_spans_dropped_total`).
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// A batch smaller than `max_export_batch_size` waits this long.
    #[serde(with = "serde_duration")]
    pub schedule_delay: Duration,
    /// `OTEL_SDK_DISABLED=true`: nothing is traced, whatever else is set.
    pub disabled: bool,
    /// `OTEL_*` values that were ignored, logged when the exporter starts
    /// (the log is not set up while the config loads).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            traces_endpoint: None,
            protocol: OtlpProtocol::default(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            compression: OtlpCompression::None,
            service_name: "sluice".to_owned(),
            resource_attributes: BTreeMap::new(),
            sampler: SamplerName::default(),
            sampler_arg: None,
            capture_content: false,
            content_max_bytes: 8 * 1024,
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_secs(5),
            disabled: false,
            warnings: Vec::new(),
        }
    }
}

impl OtelConfig {
    /// Where spans go; `None` when tracing is off.
    pub fn traces_url(&self) -> Option<String> {
        if self.disabled {
            return None;
        }
        if let Some(url) = &self.traces_endpoint {
            return Some(url.clone());
        }
        let base = self.endpoint.as_ref()?;
        Some(match self.protocol {
            OtlpProtocol::Grpc => base.clone(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        })
    }

    /// The ratio the samplers keep, 1 unless set.
    pub fn ratio(&self) -> f64 {
        self.sampler_arg.unwrap_or(1.0)
    }

    /// Applies the `OTEL_*` variables of `vars` over the file's values.
    pub fn apply_env(&mut self, vars: &HashMap<String, String>) {
        let var = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.disabled = true;
        }
        if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            self.traces_endpoint = Some(url.to_owned());
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = Some(url.to_owned());
            self.traces_endpoint = None;
        }
        let signal = |name: &str| {
            var(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .map(|v| (format!("OTEL_EXPORTER_OTLP_TRACES_{name}"), v))
                .or_else(|| {
                    var(&format!("OTEL_EXPORTER_OTLP_{name}"))
                        .map(|v| (format!("OTEL_EXPORTER_OTLP_{name}"), v))
                })
        };
        if let Some((name, value)) = signal("PROTOCOL") {
            match value {
                "grpc" => self.protocol = OtlpProtocol::Grpc,
                "http/protobuf" => self.protocol = OtlpProtocol::HttpProtobuf,
                _ => self.ignored(&name, value, "grpc or http/protobuf"),
            }
        }
        if let Some((name, value)) = signal("COMPRESSION") {
            match value {
                "gzip" => self.compression = OtlpCompression::Gzip,
                "none" => self.compression = OtlpCompression::None,
                _ => self.ignored(&name, value, "gzip or none"),
            }
        }
        if let Some((name, value)) = signal("TIMEOUT") {
            match value.parse::<u64>() {
                Ok(ms) if ms > 0 => self.timeout = Duration::from_millis(ms),
                _ => self.ignored(&name, value, "milliseconds above 0"),
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(list) = var(name) {
                self.merge_list(name, list, ListOf::Headers);
            }
        }
        if let Some(list) = var("OTEL_RESOURCE_ATTRIBUTES") {
            self.merge_list("OTEL_RESOURCE_ATTRIBUTES", list, ListOf::Resource);
        }
        if let Some(name) = self.resource_attributes.remove("service.name") {
            self.service_name = name;
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            self.service_name = name.to_owned();
        }
        self.apply_sampler_env(&var);
        self.apply_batch_env(&var);
    }

    fn apply_sampler_env<'a>(&mut self, var: &impl Fn(&str) -> Option<&'a str>) {
        if let Some(value) = var("OTEL_TRACES_SAMPLER") {
            let parsed = serde_json::from_value(serde_json::Value::from(value));
            match parsed {
                Ok(sampler) => self.sampler = sampler,
                Err(_) => self.ignored(
                    "OTEL_TRACES_SAMPLER",
                    value,
                    "always_on, always_off, traceidratio or their parentbased_ forms",
                ),
            }
        }
        if let Some(value) = var("OTEL_TRACES_SAMPLER_ARG") {
            match value.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => self.sampler_arg = Some(ratio),
                _ => self.ignored("OTEL_TRACES_SAMPLER_ARG", value, "a number from 0 to 1"),
            }
        }
    }

    fn apply_batch_env<'a>(&mut self, var: &impl Fn(&str) -> Option<&'a str>) {
        for (name, field) in [
            ("OTEL_BSP_MAX_QUEUE_SIZE", &mut self.max_queue_size),
            (
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                &mut self.max_export_batch_size,
            ),
        ] {
            if let Some(value) = var(name) {
                match value.parse::<usize>() {
                    Ok(n) if n > 0 => *field = n,
                    _ => self.warnings.push(format!(
                        "{name}={value:?} ignored: expected a count above 0"
                    )),
                }
            }
        }
        if let Some(value) = var("OTEL_BSP_SCHEDULE_DELAY") {
            match value.parse::<u64>() {
                Ok(ms) => self.schedule_delay = Duration::from_millis(ms),
                _ => self.ignored("OTEL_BSP_SCHEDULE_DELAY", value, "milliseconds"),
            }
        }
    }

    /// `key=value,key=value` with percent-encoded values (the W3C Baggage
    /// spelling both variables use); a malformed member is ignored.
    fn merge_list(&mut self, name: &str, list: &str, into: ListOf) {
        for member in list.split(',') {
            let parsed = member.split_once('=').and_then(|(key, value)| {
                let key = key.trim();
                let value = percent_encoding::percent_decode_str(value.trim())
                    .decode_utf8()
                    .ok()?;
                (!key.is_empty()).then(|| (key.to_owned(), value.into_owned()))
            });
            match (parsed, into) {
                (Some((key, value)), ListOf::Headers) if is_header(&key, &value) => {
                    self.headers.insert(key.to_ascii_lowercase(), value);
                }
                (Some((key, value)), ListOf::Resource) => {
                    self.resource_attributes.insert(key, value);
                }
                (None, _) if member.trim().is_empty() => {}
                // The member may hold a secret: it is not quoted.
                _ => self.warnings.push(format!(
                    "{name}: a member that is not a valid key=value was ignored"
                )),
            }
        }
    }

    fn ignored(&mut self, name: &str, value: &str, expected: &str) {
        self.warnings
            .push(format!("{name}={value:?} ignored: expected {expected}"));
    }

    /// What the file or environment got wrong, for `validate`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = self.traces_url() {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.parse::<http::Uri>().is_err() {
                problems.push(format!(
                    "otel.endpoint: `{}` is not an http:// or https:// URL",
                    super::redacted_text(&url)
                ));
            }
        }
        if self.sampler_arg.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            problems.push("otel.sampler_arg: must be from 0 to 1".to_owned());
        }
        for (name, value) in [
            ("max_queue_size", self.max_queue_size),
            ("max_export_batch_size", self.max_export_batch_size),
        ] {
            if value == 0 {
                problems.push(format!("otel.{name}: must be greater than 0"));
            }
        }
        if self.max_export_batch_size > self.max_queue_size {
            problems.push("otel.max_export_batch_size: must not exceed max_queue_size".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("otel.timeout: must be greater than 0".to_owned());
        }
        for (name, value) in &self.headers {
            if !is_header(name, value) {
                problems.push(format!("otel.headers: `{name}` is not a valid header"));
            }
        }
        problems
    }
}

fn is_header(name: &str, value: &str) -> bool {
    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && http::HeaderValue::from_str(value).is_ok()
}

#[derive(Clone, Copy)]
enum ListOf {
    Headers,
    Resource,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn off_until_an_endpoint_is_set() {
        let mut config = OtelConfig::default();
        assert_eq!(config.traces_url(), None);
        config.apply_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]));
        assert_eq!(
            config.traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        config.apply_env(&env(&[("OTEL_SDK_DISABLED", "TRUE")]));
        assert_eq!(config.traces_url(), None);
    }

    #[test]
    fn the_signal_variables_win_and_grpc_keeps_the_url() {
        let mut config = OtelConfig::default();
        config.apply_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]));
        assert_eq!(config.protocol, OtlpProtocol::Grpc);
        assert_eq!(config.traces_url().as_deref(), Some("http://c:4317"));
        assert_eq!(config.timeout, Duration::from_millis(2500));
        config.apply_env(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://t/x",
        )]));
        assert_eq!(config.traces_url().as_deref(), Some("http://t/x"));
    }

    #[test]
    fn lists_are_percent_decoded_and_bad_values_warned_about() {
        let mut config = OtelConfig::default();
        config.apply_env(&env(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "X-Api-Key=a%20b, junk ,k2=v=2,bad name=x",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=gw",
            ),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]));
        assert_eq!(config.headers["x-api-key"], "a b");
        assert_eq!(config.headers["k2"], "v=2");
        assert_eq!(config.service_name, "gw");
        assert_eq!(config.resource_attributes["deployment.environment"], "prod");
        assert_eq!(config.sampler, SamplerName::ParentbasedAlwaysOn);
        assert_eq!(config.warnings.len(), 5, "{:?}", config.warnings);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert!(config.warnings.iter().all(|w| !w.contains("junk")));
        config.apply_env(&env(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_SERVICE_NAME", "edge"),
        ]));
        assert_eq!(config.sampler, SamplerName::ParentbasedTraceIdRatio);
        assert_eq!(config.ratio(), 0.25);
        assert_eq!(config.service_name, "edge");
    }
}
