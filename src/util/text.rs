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

/// The longest start of `text` of at most `max` bytes that ends on a
/// character boundary: a byte bound on text that may not be ASCII.
pub fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The innermost cause of an error, as text: what an operator needs,
/// without the layers each wrapper adds (reqwest's repeats the URL, which
/// may carry credentials).
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
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
