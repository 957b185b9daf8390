//! A client's request body: the head parse (model, stream, include_usage),
//! the prompt-affinity key, the token counts of the TPM estimate, the
//! content-type check and the `stream_options.include_usage` splice. Property: every body the head
//! parse accepts can have usage requested, and still reads the same after.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use sluice::fuzzing::{affinity_key, apply, check_content_type, parse_head, with_usage_requested};
use sluice::engines::tokens::{Encoding, Estimator, prompt_tokens};
use sluice::vocab::Endpoint;

fuzz_target!(|data: &[u8]| {
    let request = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(serde_json::Value::Object(request)) => Some(request),
        _ => None,
    };
    affinity_key(request.as_ref(), data);
    content_type(data);
    let estimator = Estimator {
        default_max_tokens: 4096,
    };
    for endpoint in Endpoint::ALL {
        estimator.output(endpoint, request.as_ref());
        if let Some(request) = &request {
            prompt_tokens(endpoint, request, Encoding::O200k);
        }
    }
    let Ok(head) = parse_head(data, None) else {
        return;
    };
    assert!(!head.model.is_empty());
    let Some(spliced) = with_usage_requested(data, &head) else {
        assert!(
            !options_can_take_usage(data),
            "an accepted body could not have include_usage added"
        );
        return;
    };
    let spliced = apply(data, vec![spliced]);
    let again = parse_head(&spliced, None).expect("the spliced body parses");
    assert_eq!(again.model, head.model);
    assert_eq!(again.stream, head.stream);
    assert!(again.include_usage);
});

/// `stream_options` is absent, null or an object that parses (anything else
/// is the upstream's to reject, and is forwarded as sent).
fn options_can_take_usage(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Options<'a> {
        #[serde(borrow, default)]
        stream_options: Option<&'a RawValue>,
    }
    match serde_json::from_slice::<Options<'_>>(body) {
        Ok(Options { stream_options }) => stream_options.is_none_or(|raw| {
            matches!(
                serde_json::from_str(raw.get()),
                Ok(serde_json::Value::Object(_) | serde_json::Value::Null)
            )
        }),
        Err(_) => false,
    }
}

fn content_type(data: &[u8]) {
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, value);
        let _ = check_content_type(&headers);
    }
}
