//! Finished spans as one OTLP export: the resource (service name and
//! attributes) once, then the spans under Sluice's instrumentation scope.

use prost::Message;

use super::proto::{self, any_value};
use super::span::{Attr, Kind, SpanData, Value};
use crate::config::OtelConfig;

/// The instrumentation scope every span is exported under.
const SCOPE: &str = "sluice";

/// The resource's attributes, made once per exporter.
pub fn resource(config: &OtelConfig) -> proto::Resource {
    let mut attributes = vec![
        key_value("service.name", config.service_name.clone()),
        key_value("service.version", env!("CARGO_PKG_VERSION").to_owned()),
        key_value("telemetry.sdk.name", "sluice".to_owned()),
        key_value("telemetry.sdk.language", "rust".to_owned()),
    ];
    for (key, value) in &config.resource_attributes {
        attributes.retain(|kv| kv.key != *key);
        attributes.push(key_value(key, value.clone()));
    }
    proto::Resource { attributes }
}

/// The protobuf bytes of one export of `spans`.
pub fn export(resource: &proto::Resource, spans: &[SpanData]) -> Vec<u8> {
    proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope {
                    name: SCOPE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
                spans: spans.iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn span(data: &SpanData) -> proto::Span {
    let context = &data.context;
    let remote = if data.remote_parent {
        proto::SPAN_FLAGS_IS_REMOTE
    } else {
        0
    };
    proto::Span {
        trace_id: context.trace_id.0.to_vec(),
        span_id: context.span_id.0.to_vec(),
        trace_state: trace_state(context.trace_state.as_ref()),
        parent_span_id: data.parent.map(|id| id.0.to_vec()).unwrap_or_default(),
        name: data.name.to_string(),
        kind: match data.kind {
            Kind::Internal => proto::SPAN_KIND_INTERNAL,
            Kind::Server => proto::SPAN_KIND_SERVER,
            Kind::Client => proto::SPAN_KIND_CLIENT,
        },
        start_time_unix_nano: data.start_unix_nanos,
        end_time_unix_nano: data.end_unix_nanos,
        attributes: attributes(&data.attrs),
        events: data
            .events
            .iter()
            .map(|event| proto::Event {
                time_unix_nano: event.at_unix_nanos,
                name: event.name.to_owned(),
                attributes: attributes(&event.attrs),
            })
            .collect(),
        links: data
            .links
            .iter()
            .map(|link| proto::Link {
                trace_id: link.context.trace_id.0.to_vec(),
                span_id: link.context.span_id.0.to_vec(),
                trace_state: trace_state(link.context.trace_state.as_ref()),
                // A stored context: another process, or this one before a restart.
                flags: u32::from(link.context.sampled)
                    | proto::SPAN_FLAGS_HAS_IS_REMOTE
                    | proto::SPAN_FLAGS_IS_REMOTE,
            })
            .collect(),
        status: data.error.as_ref().map(|message| proto::Status {
            message: message.clone(),
            code: proto::STATUS_CODE_ERROR,
        }),
        flags: u32::from(context.sampled) | proto::SPAN_FLAGS_HAS_IS_REMOTE | remote,
    }
}

fn trace_state(value: Option<&http::HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn attributes(attrs: &[Attr]) -> Vec<proto::KeyValue> {
    attrs
        .iter()
        .map(|(key, value)| proto::KeyValue {
            key: (*key).to_owned(),
            value: Some(any(value)),
        })
        .collect()
}

fn key_value(key: &str, value: String) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue {
            value: Some(any_value::Value::String(value)),
        }),
    }
}

fn any(value: &Value) -> proto::AnyValue {
    let value = match value {
        Value::Str(text) => any_value::Value::String(text.to_string()),
        Value::Shared(text) => any_value::Value::String(text.to_string()),
        Value::Int(n) => any_value::Value::Int(*n),
        Value::Float(n) => any_value::Value::Double(*n),
        Value::Bool(b) => any_value::Value::Bool(*b),
        Value::Strings(list) => any_value::Value::Array(proto::ArrayValue {
            values: list
                .iter()
                .map(|text| proto::AnyValue {
                    value: Some(any_value::Value::String(text.clone())),
                })
                .collect(),
        }),
    };
    proto::AnyValue { value: Some(value) }
}
