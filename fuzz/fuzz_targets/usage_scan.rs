//! Usage as read from a JSON body, one SSE event, or a whole stream cut at
//! arbitrary points. Properties: `without_usage_null` only removes, and the
//! stream scanner finds the same usage however the stream is cut at line
//! ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::usage::{StreamUsageScanner, Usage, is_usage_only, parse, without_usage_null};
use sluice_fuzz::{at_line_ends, cut};

fuzz_target!(|data: &[u8]| {
    parse(data);
    is_usage_only(data);
    assert!(without_usage_null(data).len() <= data.len());
    let (stream, pieces) = cut(data);
    let whole = scan(&[stream]);
    scan(&pieces);
    assert_eq!(whole, scan(&at_line_ends(&pieces, stream)));
});

fn scan(pieces: &[&[u8]]) -> Option<Usage> {
    let mut scanner = StreamUsageScanner::default();
    for piece in pieces {
        scanner.scan(piece);
    }
    scanner.usage()
}
