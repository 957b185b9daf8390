//! Recording a streamed answer for the cache and replaying an entry in every
//! shape (stream or not, with or without usage, chat and other endpoints),
//! plus entries as read back from a store. Property: a stream replayed to a
//! client that asked for usage is exactly what was recorded.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::{Entry, Recorded, Replay, complete_events, replay};
use sluice::vocab::Endpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(stored) = serde_json::from_slice::<Entry>(data) {
        replay_every_way(&stored);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let body = Recorded::Json { body: text.into() };
    // A stale period as well: replay must not depend on it.
    let stale_for = Duration::from_secs(30);
    replay_every_way(&Entry::new(body, Duration::from_secs(60), stale_for, None));
    for endpoint in Endpoint::ALL {
        let Some(events) = complete_events(data, endpoint) else {
            continue;
        };
        let entry = Entry::new(
            Recorded::Sse {
                events: events.clone(),
            },
            Duration::from_secs(60),
            stale_for,
            None,
        );
        replay_every_way(&entry);
        let Some(Replay::Sse(replayed)) = replay(&entry, endpoint, true, true) else {
            panic!("a recorded stream did not replay as one");
        };
        let recorded: Vec<Bytes> = events.into_iter().map(Bytes::from).collect();
        assert_eq!(replayed, recorded);
    }
});

fn replay_every_way(entry: &Entry) {
    entry.weight();
    for endpoint in Endpoint::ALL {
        for (stream, include_usage) in [(false, false), (true, false), (true, true)] {
            replay(entry, endpoint, stream, include_usage);
        }
    }
}
