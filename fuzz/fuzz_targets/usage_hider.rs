//! The filter that hides streamed usage from clients that did not ask for
//! it, fed an arbitrary byte stream cut at arbitrary points. Properties: the
//! output does not depend on where the stream was cut, and a stream that
//! never mentions `"usage"` passes byte for byte.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::UsageHider;
use sluice_fuzz::cut;

fuzz_target!(|data: &[u8]| {
    let (stream, pieces) = cut(data);
    let whole = hide(&[stream]);
    assert_eq!(
        whole,
        hide(&pieces),
        "the output depends on where the stream was cut"
    );
    if !stream.windows(7).any(|w| w == b"\"usage\"") {
        assert_eq!(whole, stream, "a stream without usage was changed");
    }
});

fn hide(pieces: &[&[u8]]) -> Vec<u8> {
    let mut hider = UsageHider::default();
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(&hider.filter(Bytes::copy_from_slice(piece)));
    }
    if let Some(rest) = hider.finish() {
        out.extend_from_slice(&rest);
    }
    out
}
