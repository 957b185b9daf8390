//! What an operator's tools send the admin API and put in config: a runtime
//! key's JSON body (create and patch) and the URLs `/admin/config` and config
//! errors redact. Properties: nothing panics; a patch that parses applies and
//! leaves a key that passes the same checks or reports them; a password put
//! in a URL never shows in its redacted text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sluice::config::{View, redacted_text};
use sluice::engines::keys::{KeyPatch, KeySettings};

fuzz_target!(|data: &[u8]| {
    if let Ok(patch) = KeyPatch::from_json(data) {
        let mut name = "key".to_owned();
        let mut settings = KeySettings::default();
        patch.apply(&mut name, &mut settings);
        let _ = patch.into_new_key();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redacted_text(text);
    let _ = View::of(json!({"redis": {"url": text}, "alerts": {"webhook_url": text}}));
    // A password without the characters that end a user part; the redaction
    // marker itself is the one password whose redacted text shows it.
    let password: String = text.chars().filter(|c| !"@/?#".contains(*c)).collect();
    if password.len() >= 4 && password != "[redacted]" {
        for url in [
            format!("postgres://user:{password}@db/sluice"),
            format!("redis://user:{password}@cache:6379/0?x=1"),
        ] {
            let shown = redacted_text(&url);
            assert!(
                !shown.contains(&format!(":{password}@")),
                "{url} shown as {shown}"
            );
        }
    }
});
