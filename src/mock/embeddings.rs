//! Embeddings: bag-of-words vectors, so texts sharing words point in
//! similar directions (enough to try semantic caching). Token arrays are
//! decoded with the model's tokenizer first, so they embed like their text.

use std::hash::{DefaultHasher, Hash, Hasher};

use base64::Engine;
use serde_json::{Value, json};
use tiktoken_rs::CoreBPE;

use super::invalid::{Checked, Invalid, integer_in};

/// The most inputs one request may carry, as upstream.
const MAX_INPUTS: usize = 2048;
/// The most tokens one input may have.
const MAX_INPUT_TOKENS: usize = 8192;

/// The model's native vector size: 3072 for `-large`, else 1536.
fn native_dimensions(model: &str) -> usize {
    if model.contains("large") { 3072 } else { 1536 }
}

pub fn embeddings(model: &str, request: &Value, bpe: &CoreBPE) -> Checked<Value> {
    let native = native_dimensions(model) as i64;
    let dimensions = integer_in(request, "dimensions", 1, native)?;
    if dimensions.is_some() && model.contains("ada-002") {
        return Err(Invalid::value(
            "dimensions",
            "This model does not support specifying dimensions.".into(),
        ));
    }
    let dimensions = dimensions.unwrap_or(native) as usize;
    let base64 = match request.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(format) if format == "float" => false,
        Some(format) if format == "base64" => true,
        Some(Value::String(other)) => {
            return Err(Invalid::unsupported(
                "encoding_format",
                other,
                &["float", "base64"],
            ));
        }
        Some(other) => return Err(Invalid::wrong_type("encoding_format", "a string", other)),
    };
    let texts = inputs(request, bpe)?;
    let mut prompt_tokens = 0;
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, (text, tokens))| {
            prompt_tokens += tokens;
            let vector = embed(text, dimensions);
            let embedding = if base64 {
                json!(encode(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    }))
}

fn invalid_input() -> Invalid {
    Invalid::value(
        "input",
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.".into(),
    )
}

/// Each input's text and token count: a string, a list of strings, a token
/// array, or a list of token arrays.
fn inputs(request: &Value, bpe: &CoreBPE) -> Checked<Vec<(String, usize)>> {
    let input = request
        .get("input")
        .ok_or_else(|| Invalid::missing("input"))?;
    let items: Vec<&Value> = match input {
        Value::String(_) => vec![input],
        Value::Array(items) if items.first().is_some_and(Value::is_number) => vec![input],
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_INPUTS => {
            items.iter().collect()
        }
        _ => return Err(invalid_input()),
    };
    items
        .into_iter()
        .map(|item| {
            let (text, count) = match item {
                Value::String(text) if !text.is_empty() => {
                    (text.clone(), bpe.encode_ordinary(text).len())
                }
                Value::Array(tokens) if !tokens.is_empty() => {
                    let ranks: Option<Vec<u32>> = tokens
                        .iter()
                        .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                        .collect();
                    let bytes = ranks
                        .and_then(|ranks| bpe.decode_bytes(&ranks).ok())
                        .ok_or_else(invalid_input)?;
                    (String::from_utf8_lossy(&bytes).into_owned(), tokens.len())
                }
                _ => return Err(invalid_input()),
            };
            if count > MAX_INPUT_TOKENS {
                return Err(Invalid::value(
                    "input",
                    format!("This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you requested {count} tokens in the input. Please reduce your input."),
                ));
            }
            Ok((text, count))
        })
        .collect()
}

/// Little-endian f32 bytes in standard base64, as the API encodes them.
fn encode(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut vector = vec![0f32; dimensions];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut hasher = DefaultHasher::new();
        word.to_lowercase().hash(&mut hasher);
        let hash = hasher.finish();
        let sign = if hash & 1 == 0 { 1.0 } else { -1.0 };
        vector[(hash >> 1) as usize % dimensions] += sign;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::tokens::Encoding;

    fn answer(request: Value) -> Checked<Value> {
        embeddings("text-embedding-3-small", &request, Encoding::Cl100k.bpe())
    }

    #[test]
    fn token_arrays_embed_like_their_text() {
        let bpe = Encoding::Cl100k.bpe();
        let tokens = bpe.encode_ordinary("the gateway routes requests");
        let by_text = answer(json!({"input": "the gateway routes requests"})).unwrap();
        let by_tokens = answer(json!({"input": tokens})).unwrap();
        let nested = answer(json!({"input": [tokens, [1, 2]]})).unwrap();
        assert_eq!(
            by_text["data"][0]["embedding"],
            by_tokens["data"][0]["embedding"]
        );
        assert_eq!(
            by_text["data"][0]["embedding"],
            nested["data"][0]["embedding"]
        );
        assert_eq!(nested["data"].as_array().unwrap().len(), 2);
        assert_eq!(by_text["usage"], by_tokens["usage"]);
        assert_eq!(by_text["usage"]["prompt_tokens"], 4);
    }

    #[test]
    fn base64_is_little_endian_f32_and_dimensions_apply() {
        let floats = answer(json!({"input": ["a b", "c"], "dimensions": 8})).unwrap();
        let encoded =
            answer(json!({"input": ["a b", "c"], "dimensions": 8, "encoding_format": "base64"}))
                .unwrap();
        let text = encoded["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let floats: Vec<f32> =
            serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(decoded, floats);
        assert_eq!(decoded.len(), 8);
    }

    #[test]
    fn bad_input_is_refused() {
        for (request, param) in [
            (json!({}), "input"),
            (json!({"input": ""}), "input"),
            (json!({"input": []}), "input"),
            (json!({"input": [1, "a"]}), "input"),
            (json!({"input": [[1], "a", {}]}), "input"),
            (json!({"input": [4_000_000_000u64]}), "input"),
            (json!({"input": "a", "dimensions": 0}), "dimensions"),
            (json!({"input": "a", "dimensions": 5000}), "dimensions"),
            (
                json!({"input": "a", "encoding_format": "hex"}),
                "encoding_format",
            ),
        ] {
            let error = answer(request.clone()).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{request}");
        }
    }
}
