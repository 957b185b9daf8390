//! Single config values: durations (`250ms`, `1m30s`, bare seconds) and
//! `${VAR}` / `${VAR:-default}` / `$$` expansion. Properties: a parsed
//! duration can be added to an instant, survives formatting Go-style and
//! parsing again (to the millisecond), and text without `$` expands to
//! itself.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice::config::parse_duration;
use sluice::fuzzing::expand_tree;
use sluice::util::go_duration::format_go_duration;

/// Past this, f64 seconds no longer hold every millisecond.
const EXACT_UP_TO: Duration = Duration::from_secs(1_000_000_000);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(duration) = parse_duration(text) {
        assert!(Instant::now().checked_add(duration).is_some(), "{text:?}");
        let formatted = format_go_duration(duration);
        let back = parse_duration(&formatted).expect("a formatted duration parses");
        if duration < EXACT_UP_TO {
            let millis = Duration::from_millis(duration.as_millis() as u64);
            assert!(
                back.abs_diff(millis) <= Duration::from_millis(1),
                "{text:?} -> {duration:?} -> {formatted:?} -> {back:?}"
            );
        }
    }
    let mut value = toml::Value::String(text.to_owned());
    let lookup = |name: &str| (name == "KEY").then(|| "secret".to_owned());
    if expand_tree(&mut value, &mut String::new(), &lookup).is_ok() && !text.contains('$') {
        assert_eq!(value.as_str(), Some(text));
    }
});
