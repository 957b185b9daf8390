//! An upstream's retry hints: `retry-after-ms`, `x-ms-retry-after-ms`,
//! `retry-after` (seconds or an HTTP date), the `x-ratelimit-reset-*` Go
//! durations and `x-ratelimit-remaining-*`. The input is their values, one a
//! line, in that order. Any values must give a hint that can be added to an
//! instant, or none; never a panic.
#![no_main]

use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::remaining;
use sluice::engines::routing::retry_after;

const NAMES: [&str; 6] = [
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "retry-after",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-remaining-requests",
];

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(data.split(|b| *b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(value)
            && !value.is_empty()
        {
            headers.insert(*name, value);
        }
    }
    if let Some(hint) = retry_after(&headers) {
        assert!(Instant::now().checked_add(hint).is_some(), "{hint:?}");
    }
    remaining(&headers, NAMES[5]);
});
