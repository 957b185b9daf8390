//! What a request says about being answered later: `Prefer: respond-async`
//! (RFC 7240) or `x-sluice-async: true`, and the `x-sluice-callback` URL,
//! checked against the operator's `callback_hosts`.

use http::HeaderMap;

use super::super::JobsError;

/// The header naming where the result is POSTed when ready.
pub const X_SLUICE_CALLBACK: &str = "x-sluice-callback";

/// Longest callback URL accepted.
const MAX_CALLBACK_LEN: usize = 2048;

/// Whether the client asks for an asynchronous answer. Only header lookups:
/// the path of every other call pays nothing more.
pub fn wants_async(headers: &HeaderMap) -> bool {
    let flagged = headers
        .get_all("x-sluice-async")
        .iter()
        .any(|value| value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"true"));
    flagged
        || headers
            .get_all(http::header::HeaderName::from_static("prefer"))
            .iter()
            .any(|value| prefers_async(value.as_bytes()))
}

/// RFC 7240: preferences are comma-separated, each a case-insensitive
/// token, maybe `= value` and `; parameters`; commas inside quoted strings
/// do not separate.
fn prefers_async(value: &[u8]) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (index, &byte) in value.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                if is_respond_async(&value[start..index]) {
                    return true;
                }
                start = index + 1;
            }
            _ => {}
        }
    }
    is_respond_async(&value[start..])
}

fn is_respond_async(preference: &[u8]) -> bool {
    let name = preference
        .split(|byte| *byte == b';' || *byte == b'=')
        .next()
        .unwrap_or_default();
    name.trim_ascii().eq_ignore_ascii_case(b"respond-async")
}

/// The callback URL, if one is asked for and its host is allowed: `https`
/// or `http`, and a host that `allowed` names exactly or by `*.domain`.
pub fn callback(headers: &HeaderMap, allowed: &[String]) -> Result<Option<String>, JobsError> {
    let Some(value) = headers.get(X_SLUICE_CALLBACK) else {
        return Ok(None);
    };
    let refuse = |why: &str| JobsError::invalid(why.to_owned(), Some(X_SLUICE_CALLBACK));
    if value.len() > MAX_CALLBACK_LEN {
        return Err(refuse("The x-sluice-callback URL is too long."));
    }
    let text = value
        .to_str()
        .map_err(|_| refuse("The x-sluice-callback URL is not text."))?;
    let url = reqwest::Url::parse(text.trim())
        .map_err(|_| refuse("The x-sluice-callback header is not a URL."))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(refuse("The x-sluice-callback URL must be https or http."));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if !allowed.iter().any(|pattern| host_matches(&host, pattern)) {
        return Err(refuse(
            "The x-sluice-callback host is not one this gateway may call.",
        ));
    }
    Ok(Some(url.into()))
}

/// `pattern` is a host name, or `*.domain` for any name under `domain`.
fn host_matches(host: &str, pattern: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => !host.is_empty() && host == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn reads_prefer_as_rfc_7240_writes_it() {
        let asks = |value: &str| wants_async(&headers(&[("prefer", value)]));
        assert!(asks("respond-async"));
        assert!(asks("Respond-Async"));
        assert!(asks("wait=10, respond-async"));
        assert!(asks(" respond-async ; foo=bar"));
        assert!(asks("return=minimal,respond-async"));
        assert!(!asks("return=minimal"));
        assert!(!asks("respond-asynchronously"));
        assert!(!asks(r#"foo="a, respond-async""#));
        assert!(wants_async(&headers(&[
            ("prefer", "wait=5"),
            ("prefer", "respond-async")
        ])));
        assert!(wants_async(&headers(&[("x-sluice-async", "True")])));
        assert!(!wants_async(&headers(&[("x-sluice-async", "false")])));
        assert!(!wants_async(&HeaderMap::new()));
    }

    #[test]
    fn callbacks_go_only_to_allowed_hosts() {
        let allowed = vec!["hooks.example.com".to_owned(), "*.corp.test".to_owned()];
        let check = |url: &str| callback(&headers(&[(X_SLUICE_CALLBACK, url)]), &allowed);
        assert!(check("https://hooks.example.com/done").unwrap().is_some());
        assert!(check("http://a.b.corp.test:8080/x").unwrap().is_some());
        assert!(check("https://corp.test/x").is_err());
        assert!(check("https://evilcorp.test/x").is_err());
        assert!(check("https://hooks.example.com.evil.test/").is_err());
        assert!(check("ftp://hooks.example.com/").is_err());
        assert!(check("not a url").is_err());
        assert!(callback(&HeaderMap::new(), &allowed).unwrap().is_none());
        let none = callback(
            &headers(&[(X_SLUICE_CALLBACK, "https://hooks.example.com/")]),
            &[],
        );
        assert!(none.is_err());
    }
}
