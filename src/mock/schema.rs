//! A value that satisfies a JSON schema, for tool-call arguments and
//! structured output. Frameworks parse these answers into typed objects
//! (pydantic models, zod schemas), so the value must fit the schema's
//! types, required keys, enums and bounds; it need not be meaningful.

use serde_json::{Map, Value, json};

use super::text::WORDS;

/// Nesting deeper than this (recursive `$ref`s) ends in the smallest value.
const MAX_DEPTH: usize = 12;
/// Values generated for one schema at most, so `minItems` in nested arrays
/// cannot make an answer explode.
const MAX_NODES: usize = 4096;
/// Array items generated at most, even when `minItems` asks for more.
const MAX_ITEMS: u64 = 64;
/// Characters added at most to meet `minLength`s, over the whole value.
const MAX_PADDING: usize = 64 * 1024;

/// Generates a value for `schema`, deterministic for the same `rng` seed.
pub fn generate(schema: &Value, rng: &mut fastrand::Rng) -> Value {
    let mut generator = Generator {
        root: schema,
        rng,
        nodes: 0,
        padding: MAX_PADDING,
    };
    generator.value(schema, 0)
}

struct Generator<'a> {
    /// Where `$ref`s resolve (`#/$defs/...`, `#/definitions/...`).
    root: &'a Value,
    rng: &'a mut fastrand::Rng,
    nodes: usize,
    /// What is left of `MAX_PADDING`.
    padding: usize,
}

impl<'a> Generator<'a> {
    fn value(&mut self, schema: &Value, depth: usize) -> Value {
        self.nodes += 1;
        // A hard stop for schemas that fan out (`allOf` of many `$ref`s to
        // itself would otherwise take exponential time); the soft limits in
        // `object` and `array` keep ordinary schemas whole.
        if self.nodes > 2 * MAX_NODES {
            return Value::Null;
        }
        let Value::Object(schema) = schema else {
            // `true` or `{}` accept anything; a string is the plainest thing.
            return json!("value");
        };
        if let Some(target) = self.reference(schema) {
            return if depth < MAX_DEPTH {
                self.value(target, depth + 1)
            } else {
                Value::Null
            };
        }
        if let Some(constant) = schema.get("const") {
            return constant.clone();
        }
        if let Some(Value::Array(options)) = schema.get("enum")
            && !options.is_empty()
        {
            return options[self.rng.usize(..options.len())].clone();
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = schema.get(key)
                && let Some(first) = branches.first()
            {
                return self.value(first, depth + 1);
            }
        }
        if let Some(Value::Array(parts)) = schema.get("allOf") {
            return self.all_of(schema, parts, depth);
        }
        match type_of(schema) {
            "object" => self.object(schema, depth),
            "array" => self.array(schema, depth),
            "integer" => integer(schema, self.rng),
            "number" => number(schema, self.rng),
            "boolean" => Value::Bool(self.rng.bool()),
            "null" => Value::Null,
            _ => string(schema, self.rng, &mut self.padding),
        }
    }

    fn reference(&self, schema: &Map<String, Value>) -> Option<&'a Value> {
        let pointer = schema.get("$ref")?.as_str()?.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    /// Every part's object merged, with the schema's own keywords besides.
    fn all_of(&mut self, schema: &Map<String, Value>, parts: &[Value], depth: usize) -> Value {
        let mut own = schema.clone();
        own.remove("allOf");
        let mut merged = match self.value(&Value::Object(own), depth + 1) {
            Value::Object(fields) => fields,
            _ => Map::new(),
        };
        for part in parts {
            match self.value(part, depth + 1) {
                Value::Object(fields) => merged.extend(fields),
                other if parts.len() == 1 => return other,
                _ => {}
            }
        }
        Value::Object(merged)
    }

    /// Every declared property, required or not: strict structured output
    /// requires them all, and an optional one present is still valid.
    fn object(&mut self, schema: &Map<String, Value>, depth: usize) -> Value {
        let mut fields = Map::new();
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (name, property) in properties {
                if depth >= MAX_DEPTH || self.nodes >= MAX_NODES {
                    break;
                }
                fields.insert(name.clone(), self.value(property, depth + 1));
            }
        }
        // A required key without a declared schema still has to be there.
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    fields.insert(name.to_owned(), json!("value"));
                }
            }
        }
        Value::Object(fields)
    }

    fn array(&mut self, schema: &Map<String, Value>, depth: usize) -> Value {
        let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
        let max = schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let count = min.max(1).min(max).min(MAX_ITEMS);
        let items = schema.get("items").cloned().unwrap_or(Value::Bool(true));
        let mut values = Vec::new();
        for _ in 0..count {
            if depth >= MAX_DEPTH || (self.nodes >= MAX_NODES && values.len() as u64 >= min) {
                break;
            }
            values.push(self.value(&items, depth + 1));
        }
        Value::Array(values)
    }
}

/// The schema's type; the first non-null one of a list; else implied by
/// its keywords.
fn type_of(schema: &Map<String, Value>) -> &str {
    match schema.get("type") {
        Some(Value::String(kind)) => kind,
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .unwrap_or("null"),
        _ if schema.contains_key("properties") => "object",
        _ if schema.contains_key("items") => "array",
        _ => "string",
    }
}

fn bound(schema: &Map<String, Value>, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

/// Lower and upper limits, exclusive ones moved inwards by `step`.
fn range(schema: &Map<String, Value>, step: f64) -> (f64, f64) {
    let low = bound(schema, "minimum")
        .or_else(|| bound(schema, "exclusiveMinimum").map(|x| x + step))
        .unwrap_or(0.0);
    let high = bound(schema, "maximum")
        .or_else(|| bound(schema, "exclusiveMaximum").map(|x| x - step))
        .unwrap_or(low.max(0.0) + 100.0);
    (low, high.max(low))
}

fn integer(schema: &Map<String, Value>, rng: &mut fastrand::Rng) -> Value {
    let (low, high) = range(schema, 1.0);
    let (low, high) = (low.ceil() as i64, high.floor() as i64);
    json!(if low <= high {
        rng.i64(low..=high)
    } else {
        low
    })
}

fn number(schema: &Map<String, Value>, rng: &mut fastrand::Rng) -> Value {
    let (low, high) = range(schema, 0.01);
    // Two decimals: readable, and still inside the bounds.
    let value = ((low + rng.f64() * (high - low)) * 100.0).floor() / 100.0;
    json!(value.clamp(low, high))
}

fn string(schema: &Map<String, Value>, rng: &mut fastrand::Rng, padding: &mut usize) -> Value {
    let formatted = match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => Some("2024-05-13T12:00:00Z".to_owned()),
        Some("date") => Some("2024-05-13".to_owned()),
        Some("time") => Some("12:00:00Z".to_owned()),
        Some("email") => Some("user@example.com".to_owned()),
        Some("uri" | "url") => Some("https://example.com/".to_owned()),
        Some("uuid") => Some(format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            rng.u32(..),
            rng.u16(..),
            rng.u16(..0x1000),
            rng.u16(..0x1000),
            rng.u64(..1 << 48)
        )),
        _ => None,
    };
    let mut text = formatted.unwrap_or_else(|| {
        let words: Vec<&str> = (0..3).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
        words.join(" ")
    });
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = schema.get("maxLength").and_then(Value::as_u64);
    let short = min.saturating_sub(text.chars().count()).min(*padding);
    *padding -= short;
    text.extend(std::iter::repeat_n('x', short));
    if let Some(max) = max {
        text = text.chars().take(max as usize).collect();
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_seeded(schema: Value, seed: u64) -> Value {
        generate(&schema, &mut fastrand::Rng::with_seed(seed))
    }

    fn gen_value(schema: Value) -> Value {
        gen_seeded(schema, 7)
    }

    #[test]
    fn objects_have_every_property_of_the_right_type() {
        let value = gen_value(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 18, "maximum": 20},
                "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
                "nested": {"type": "object", "properties": {"x": {"type": "null"}}, "required": ["x"]}
            },
            "required": ["name", "age", "extra"],
            "additionalProperties": false
        }));
        assert!(value["name"].is_string());
        let age = value["age"].as_i64().unwrap();
        assert!((18..=20).contains(&age), "{age}");
        let score = value["score"].as_f64().unwrap();
        assert!(score > 0.0 && score <= 1.0, "{score}");
        assert!(value["ok"].is_boolean());
        let tags = value["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 2);
        assert!(tags.iter().all(Value::is_string));
        assert_eq!(value["nested"], json!({"x": null}));
        assert!(
            value.get("extra").is_some(),
            "required keys are always present"
        );
    }

    #[test]
    fn enum_const_and_first_branch_of_any_of() {
        let value = gen_value(json!({
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "kind": {"const": "weather"},
                "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "either": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
                "nullable": {"type": ["null", "string"]}
            }
        }));
        assert!(["celsius", "fahrenheit"].contains(&value["unit"].as_str().unwrap()));
        assert_eq!(value["kind"], "weather");
        assert!(value["maybe"].is_i64());
        assert!(value["either"].is_boolean());
        assert!(value["nullable"].is_string());
    }

    #[test]
    fn refs_resolve_in_defs_and_recursion_ends() {
        let value = gen_value(json!({
            "$defs": {
                "Item": {"type": "object", "properties": {"sku": {"type": "string", "minLength": 12}}, "required": ["sku"]},
                "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}
            },
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                "tree": {"$ref": "#/$defs/Node"}
            }
        }));
        assert!(value["items"][0]["sku"].as_str().unwrap().len() >= 12);
        assert!(value["tree"].is_object());
    }

    #[test]
    fn all_of_merges_and_strings_honour_formats_and_lengths() {
        let value = gen_value(json!({
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string", "format": "date-time"}}},
                {"type": "object", "properties": {"b": {"type": "string", "maxLength": 2}}}
            ]
        }));
        assert_eq!(value["a"], "2024-05-13T12:00:00Z");
        assert!(value["b"].as_str().unwrap().chars().count() <= 2);
    }

    #[test]
    fn deterministic_per_seed_and_bounded() {
        let schema = json!({"type": "object", "properties": {"s": {"type": "string"}, "n": {"type": "number"}}});
        assert_eq!(gen_seeded(schema.clone(), 1), gen_seeded(schema.clone(), 1));
        assert_ne!(gen_seeded(schema.clone(), 1), gen_seeded(schema, 2));
        let wide = json!({"type": "array", "minItems": 1000, "items":
            {"type": "array", "minItems": 1000, "items": {"type": "integer"}}});
        let value = gen_value(wide);
        let total: usize = value
            .as_array()
            .unwrap()
            .iter()
            .map(|inner| inner.as_array().unwrap().len())
            .sum();
        assert!(total <= (MAX_ITEMS * MAX_ITEMS) as usize);
        let parts = vec![json!({"$ref": "#/$defs/A"}); 10];
        let fan_out = json!({"$defs": {"A": {"allOf": parts}}, "$ref": "#/$defs/A"});
        let started = std::time::Instant::now();
        gen_value(fan_out);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let long = json!({"type": "array", "minItems": 64, "items": {"type": "string", "minLength": 100_000}});
        assert!(gen_value(long).to_string().len() < 2 * MAX_PADDING);
    }
}
