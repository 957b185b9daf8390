//! Just enough of `multipart/form-data` to find a text field (`model`,
//! `stream`) in an upload already read into memory: it returns where the
//! value sits, so the body is neither copied nor re-encoded, and a renamed
//! model is spliced into the client's bytes.

use std::ops::Range;

use memchr::memmem;

/// Part headers longer than this are not a form field Sluice reads.
const MAX_PART_HEAD: usize = 8 * 1024;

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        let value = value.trim().trim_matches('"');
        (name.trim().eq_ignore_ascii_case("boundary") && !value.is_empty() && value.len() <= 200)
            .then_some(value)
    })
}

/// Where the value of the text field `name` sits in `body`; `None` when the
/// body has no such field (or is not well-formed around it). Files are
/// skipped over, not read.
pub fn field(body: &[u8], boundary: &str, name: &str) -> Option<Range<usize>> {
    let delimiter = format!("--{boundary}");
    let closing = format!("\r\n--{boundary}");
    let finder = memmem::Finder::new(closing.as_bytes());
    // The first delimiter may follow a preamble.
    let mut at = memmem::find(body, delimiter.as_bytes())? + delimiter.len();
    loop {
        let rest = body.get(at..)?;
        if rest.starts_with(b"--") {
            return None;
        }
        let head_start = at + rest.strip_prefix(b"\r\n").map_or(0, |_| 2);
        let head_window = body.get(head_start..)?;
        let head_window = &head_window[..head_window.len().min(MAX_PART_HEAD)];
        let head_len = memmem::find(head_window, b"\r\n\r\n")?;
        let head = &head_window[..head_len];
        let value_start = head_start + head_len + 4;
        let value_len = finder.find(body.get(value_start..)?)?;
        if names_field(head, name) {
            return Some(value_start..value_start + value_len);
        }
        at = value_start + value_len + closing.len();
    }
}

/// The body with the text field `name` set to `value`: replaced in place,
/// or added as the first part. `None` when the body is not well-formed.
pub fn with_field(body: &[u8], boundary: &str, name: &str, value: &str) -> Option<Vec<u8>> {
    let (span, insert) = match field(body, boundary, name) {
        Some(span) => (span, value.as_bytes().to_vec()),
        None => {
            let first = memmem::find(body, format!("--{boundary}").as_bytes())?;
            let part = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            );
            (first..first, part.into_bytes())
        }
    };
    let mut spliced = Vec::with_capacity(body.len() + insert.len());
    spliced.extend_from_slice(&body[..span.start]);
    spliced.extend_from_slice(&insert);
    spliced.extend_from_slice(&body[span.end..]);
    Some(spliced)
}

/// A text field's value, when it is short UTF-8.
pub fn text_field<'a>(body: &'a [u8], boundary: &str, name: &str) -> Option<&'a str> {
    let span = field(body, boundary, name)?;
    let value = std::str::from_utf8(body.get(span)?).ok()?;
    (value.len() <= 256).then_some(value)
}

/// Whether a part's headers declare the form field `name` (not a file).
fn names_field(head: &[u8], name: &str) -> bool {
    let Ok(head) = std::str::from_utf8(head) else {
        return false;
    };
    head.split("\r\n").any(|line| {
        let Some((header, value)) = line.split_once(':') else {
            return false;
        };
        header.trim().eq_ignore_ascii_case("content-disposition")
            && value.split(';').skip(1).any(|param| {
                param.split_once('=').is_some_and(|(key, v)| {
                    key.trim() == "name" && v.trim().trim_matches('"') == name
                })
            })
            && !value.contains("filename=")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n-- not a boundary\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\ncontent-disposition: form-data; name=stream\r\n\r\ntrue\r\n--XyZ--\r\n";

    #[test]
    fn finds_text_fields_after_a_file() {
        assert_eq!(text_field(BODY, "XyZ", "model"), Some("whisper-1"));
        assert_eq!(text_field(BODY, "XyZ", "stream"), Some("true"));
        assert_eq!(
            text_field(BODY, "XyZ", "file"),
            None,
            "a file is not a text field"
        );
        assert_eq!(text_field(BODY, "XyZ", "language"), None);
        assert_eq!(text_field(b"garbage", "XyZ", "model"), None);
        assert_eq!(text_field(&BODY[..60], "XyZ", "model"), None, "cut short");
    }

    #[test]
    fn sets_a_field_in_place_or_as_a_new_first_part() {
        let renamed = with_field(BODY, "XyZ", "model", "gpt-4o-transcribe").unwrap();
        assert_eq!(
            text_field(&renamed, "XyZ", "model"),
            Some("gpt-4o-transcribe")
        );
        assert_eq!(text_field(&renamed, "XyZ", "stream"), Some("true"));
        let added = with_field(BODY, "XyZ", "language", "en").unwrap();
        assert_eq!(text_field(&added, "XyZ", "language"), Some("en"));
        assert_eq!(text_field(&added, "XyZ", "model"), Some("whisper-1"));
    }

    #[test]
    fn reads_the_boundary_parameter() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"abc\""),
            Some("abc")
        );
        assert_eq!(boundary("Multipart/Form-Data;boundary=x1"), Some("x1"));
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("application/json; boundary=x"), None);
    }
}
