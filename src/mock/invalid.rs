//! The mock's refusals, worded and shaped like the API's so clients take the
//! same error path (the SDKs raise by status, frameworks read `param`).

use http::StatusCode;
use serde_json::{Value, json};

use crate::util::text::clip;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

pub type Checked<T> = Result<T, Invalid>;

impl Invalid {
    fn bad(param: &str, code: &'static str, message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
            param: Some(param.to_owned()),
            code: Some(code),
        }
    }

    pub fn missing(param: &str) -> Self {
        Self::bad(
            param,
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
        )
    }

    /// `expected` reads like "an integer" or "an array of objects".
    pub fn wrong_type(param: &str, expected: &str, got: &Value) -> Self {
        Self::bad(
            param,
            "invalid_type",
            format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                kind(got)
            ),
        )
    }

    /// A value outside `supported`, quoted (clipped) in the message.
    pub fn unsupported(param: &str, got: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("'{s}'")).collect();
        Self::bad(
            param,
            "invalid_value",
            format!(
                "Invalid value: '{}'. Supported values are: {}.",
                clip(got),
                list.join(", ")
            ),
        )
    }

    pub fn out_of_range(param: &str, min: i64, max: i64, got: &Value) -> Self {
        let (code, limit) = if got.as_f64().is_some_and(|v| v < min as f64) {
            ("integer_below_min_value", format!(">= {min}"))
        } else {
            ("integer_above_max_value", format!("<= {max}"))
        };
        Self::bad(
            param,
            code,
            format!(
                "Invalid '{param}': {}. Expected a value {limit}, but got {} instead.",
                code.replace('_', " "),
                clip(&got.to_string())
            ),
        )
    }

    /// Any other bad value, with the API's plain wording.
    pub fn value(param: &str, message: String) -> Self {
        Self::bad(param, "invalid_value", message)
    }

    /// A refusal without a code: a model that does not serve the endpoint,
    /// a body that is not a JSON object.
    pub fn plain(status: StatusCode, message: String, param: Option<&str>) -> Self {
        Self {
            status,
            message,
            param: param.map(str::to_owned),
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message, "type": "invalid_request_error",
            "param": self.param, "code": self.code
        }})
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional integer field within `min..=max`.
pub fn integer_in(request: &Value, param: &str, min: i64, max: i64) -> Checked<Option<i64>> {
    match request.get(param) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let number = value
                .as_i64()
                .ok_or_else(|| Invalid::wrong_type(param, "an integer", value))?;
            if (min..=max).contains(&number) {
                Ok(Some(number))
            } else {
                Err(Invalid::out_of_range(param, min, max, value))
            }
        }
    }
}

/// An optional boolean field.
pub fn boolean(request: &Value, param: &str) -> Checked<bool> {
    match request.get(param) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(other) => Err(Invalid::wrong_type(param, "a boolean", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_the_apis() {
        let error = integer_in(&json!({"n": 0}), "n", 1, 128).unwrap_err();
        assert_eq!(
            error.message,
            "Invalid 'n': integer below min value. Expected a value >= 1, but got 0 instead."
        );
        assert_eq!(error.code, Some("integer_below_min_value"));
        let error = integer_in(&json!({"n": "2"}), "n", 1, 128).unwrap_err();
        assert_eq!(
            error.message,
            "Invalid type for 'n': expected an integer, but got a string instead."
        );
        let body = Invalid::missing("messages").body();
        assert_eq!(body["error"]["param"], "messages");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let long = "x".repeat(10_000);
        let error = Invalid::unsupported("response_format.type", &long, &["text"]);
        assert!(error.message.len() < 400);
    }
}
