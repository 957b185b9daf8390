//! Key secrets and ids from the operating system's CSPRNG.

use super::KeyStoreError;

/// What every runtime secret starts with, so leaked ones are recognisable.
pub const SECRET_PREFIX: &str = "sk-sluice-";

/// The URL-safe base64 alphabet: 64 symbols, so `byte & 63` is uniform.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random<const N: usize>() -> Result<[u8; N], KeyStoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| KeyStoreError::Random(error.to_string()))?;
    Ok(bytes)
}

/// `sk-sluice-` and 32 URL-safe characters: 192 random bits.
pub fn new_secret() -> Result<String, KeyStoreError> {
    let tail: String = random::<32>()?
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte & 63)]))
        .collect();
    Ok(format!("{SECRET_PREFIX}{tail}"))
}

/// `key_` and 16 hex characters.
pub fn new_id() -> Result<String, KeyStoreError> {
    Ok(format!("key_{}", hex::encode(random::<8>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_ids_have_their_shapes_and_differ() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        let tail = a.strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(tail.len(), 32);
        assert!(tail.bytes().all(|c| ALPHABET.contains(&c)));
        let id = new_id().unwrap();
        assert_eq!(id.len(), 20);
        assert!(id[4..].bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
