//! Usage as read from a JSON body, one SSE event, or a whole stream cut at
//! arbitrary points. Properties: the stream scanner follows the event-stream
//! grammar, so it finds the same usage however the stream is cut, even
//! between a `\r` and its `\n`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::infra::sse::usage::{StreamUsageScanner, hide_in_event, parse};
use sluice::vocab::Usage;
use sluice_fuzz::cut;

fuzz_target!(|data: &[u8]| {
    parse(data);
    let _ = hide_in_event(data);
    let (stream, pieces) = cut(data);
    assert_eq!(scan(&[stream]), scan(&pieces));
});

fn scan(pieces: &[&[u8]]) -> Option<Usage> {
    let mut scanner = StreamUsageScanner::default();
    for piece in pieces {
        scanner.scan(piece);
    }
    scanner.usage()
}
