//! The mock provider's moderations, images and audio answers: plausible,
//! deterministic shapes (the same request gets the same answer), with
//! `usage` where the current API reports it.

use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::json_reply;
use crate::upstream::{UpstreamResponse, multipart};
use crate::vocab::Endpoint;

/// A 1x1 transparent PNG.
const PIXEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// Speech is this many bytes of audio per input character, in chunks of
/// `SPEECH_CHUNK`, so a client sees a body that streams.
const SPEECH_BYTES_PER_CHAR: usize = 64;
const SPEECH_CHUNK: usize = 4096;
const MAX_SPEECH_BYTES: usize = 1024 * 1024;

const MODERATION_CATEGORIES: &[&str] = &[
    "harassment",
    "hate",
    "illicit",
    "self-harm",
    "sexual",
    "violence",
];

pub fn respond(endpoint: Endpoint, model: &str, body: &[u8]) -> UpstreamResponse {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let ok = |value: Value| json_reply(StatusCode::OK, Bytes::from(value.to_string()));
    match endpoint {
        Endpoint::Moderations => ok(moderation(model, &request)),
        Endpoint::ImageGenerations => ok(images(&request)),
        Endpoint::AudioSpeech => speech(&request),
        Endpoint::AudioTranscriptions | Endpoint::AudioTranslations => transcription(body),
        Endpoint::ImageEdits | Endpoint::ImageVariations => ok(edited_images(body)),
        _ => json_reply(
            StatusCode::NOT_FOUND,
            crate::vocab::error::error_body("Invalid URL", "invalid_request_error", None, None),
        ),
    }
}

fn seed_of(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn moderation(model: &str, request: &Value) -> Value {
    let inputs = match &request["input"] {
        Value::Array(items) => items.len().max(1),
        _ => 1,
    };
    let categories: serde_json::Map<String, Value> = MODERATION_CATEGORIES
        .iter()
        .map(|c| ((*c).to_owned(), json!(false)))
        .collect();
    let scores: serde_json::Map<String, Value> = MODERATION_CATEGORIES
        .iter()
        .map(|c| ((*c).to_owned(), json!(0.0001)))
        .collect();
    let result = json!({"flagged": false, "categories": categories, "category_scores": scores});
    json!({
        "id": format!("modr-{:016x}", seed_of(request.to_string().as_bytes())),
        "model": model,
        "results": vec![result; inputs]
    })
}

fn images(request: &Value) -> Value {
    let count = request["n"].as_u64().unwrap_or(1).clamp(1, 10) as usize;
    let image = if request["response_format"] == "url" {
        json!({"url": format!("data:image/png;base64,{PIXEL_PNG}")})
    } else {
        json!({"b64_json": PIXEL_PNG})
    };
    let prompt_tokens = request["prompt"]
        .as_str()
        .map_or(1, |p| p.split_whitespace().count().max(1) as u64);
    json!({
        "created": 0,
        "data": vec![image; count],
        "usage": {
            "input_tokens": prompt_tokens, "output_tokens": 272 * count as u64,
            "total_tokens": prompt_tokens + 272 * count as u64,
            "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0}
        }
    })
}

/// An edit or a variation of an uploaded image: the upload's form fields
/// read as an image generation's JSON would be.
fn edited_images(body: &[u8]) -> Value {
    let boundary = boundary_of(body);
    let field = |name| multipart::text_field(body, boundary, name);
    let mut request = json!({
        "n": field("n").and_then(|n| n.parse::<u64>().ok()).unwrap_or(1),
        "prompt": field("prompt").unwrap_or("a variation"),
    });
    if let Some(format) = field("response_format") {
        request["response_format"] = format.into();
    }
    images(&request)
}

/// A multipart body's boundary: its first line, after `--`.
fn boundary_of(body: &[u8]) -> &str {
    body.split(|b| *b == b'\r')
        .next()
        .and_then(|line| std::str::from_utf8(line.strip_prefix(b"--")?).ok())
        .unwrap_or_default()
}

/// Bytes of silence labelled with the asked format, streamed in chunks.
fn speech(request: &Value) -> UpstreamResponse {
    let chars = request["input"].as_str().map_or(1, str::len).max(1);
    let total = (chars * SPEECH_BYTES_PER_CHAR).min(MAX_SPEECH_BYTES);
    let content_type = match request["response_format"].as_str().unwrap_or("mp3") {
        "wav" => "audio/wav",
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    };
    let chunks: Vec<Result<Bytes, crate::upstream::UpstreamError>> = (0..total)
        .step_by(SPEECH_CHUNK)
        .map(|start| Ok(Bytes::from(vec![0u8; SPEECH_CHUNK.min(total - start)])))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    UpstreamResponse {
        status: StatusCode::OK,
        headers,
        body: futures_util::stream::iter(chunks).boxed(),
    }
}

/// A transcript made of the upload's hash; `response_format = "text"` gets
/// plain text, anything else JSON with token usage.
fn transcription(body: &[u8]) -> UpstreamResponse {
    let text = format!("Mock transcript {:08x}.", seed_of(body) as u32);
    let boundary = boundary_of(body);
    if multipart::text_field(body, boundary, "response_format") == Some("text") {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let bytes = Bytes::from(text);
        return UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body: futures_util::stream::once(async move { Ok(bytes) }).boxed(),
        };
    }
    let input_tokens = (body.len() as u64 / 1024).max(1);
    let value = json!({
        "text": text,
        "usage": {"type": "tokens", "input_tokens": input_tokens, "output_tokens": 4,
                  "total_tokens": input_tokens + 4}
    });
    json_reply(StatusCode::OK, Bytes::from(value.to_string()))
}
