//! Quoting client input and keys safely: bounded, masked.

use std::borrow::Cow;

/// How many characters of a client's input an error message or log line quotes.
pub const ECHO_LIMIT: usize = 128;

/// At most `ECHO_LIMIT` characters of client input, saying when it was cut,
/// so a 16 MiB field never becomes a 16 MiB error body or log line.
pub fn clip(input: &str) -> Cow<'_, str> {
    match input.char_indices().nth(ECHO_LIMIT) {
        None => Cow::Borrowed(input),
        Some((end, _)) => Cow::Owned(format!("{}... ({} bytes, cut)", &input[..end], input.len())),
    }
}

/// Masks a presented key: at most its last four characters show, and none
/// of a short one, so a log line or error never carries enough of a secret
/// to narrow a guess.
pub fn mask_key(key: &str) -> String {
    let count = key.chars().count();
    if count < 16 {
        return "****".to_owned();
    }
    let tail: String = key.chars().skip(count - 4).collect();
    format!("...{tail}")
}
