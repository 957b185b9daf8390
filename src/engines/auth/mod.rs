//! Virtual keys: the client's bearer token is looked up by SHA-256 digest and
//! replaced by an `Identity` for the layers behind. It never goes upstream.

mod guard;
mod throttle;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AuthConfig, KeyConfig, KeyDigest, sha256};
use crate::util::text::mask_key;
use crate::vocab::Identity;
use crate::vocab::error::GatewayError;

pub use guard::{AuthGuard, AuthRefused, Authenticate, KEY_PROTOCOL, Presented, presented_key};
pub use throttle::FailedAuth;

/// Immutable key table, built once at start-up and shared by handle.
pub struct KeyStore {
    by_digest: HashMap<KeyDigest, Arc<Identity>>,
    /// The same identities by stable id: work Sluice runs later for a key
    /// (batches, asynchronous jobs) finds its key again by it.
    by_id: HashMap<Arc<str>, Arc<Identity>>,
    required: bool,
    anonymous: Arc<Identity>,
}

impl KeyStore {
    pub fn new(auth: &AuthConfig, keys: &[KeyConfig]) -> Self {
        let by_digest: HashMap<KeyDigest, Arc<Identity>> = keys
            .iter()
            .filter_map(|key| {
                let identity = Identity {
                    id: Arc::from(key.id()),
                    name: Arc::from(key.name.as_str()),
                    org: key.org.as_deref().map(Arc::from),
                    models: key.models.as_ref().map(|m| m.iter().cloned().collect()),
                    cache: key.cache,
                    priority: key.priority,
                    max_priority: key.max_priority,
                    budget: key.budget.clone(),
                    internal: false,
                    queue_in_maintenance: key.queue_in_maintenance,
                };
                Some((key.digest()?, Arc::new(identity)))
            })
            .collect();
        let by_id = by_digest
            .values()
            .map(|identity| (identity.id.clone(), identity.clone()))
            .collect();
        Self {
            by_digest,
            by_id,
            required: auth.required,
            anonymous: Arc::new(Identity::unrestricted(crate::config::ANONYMOUS_ID)),
        }
    }

    /// The key with stable id `id` (the anonymous caller's too, while auth
    /// is optional); `None` once it is revoked or gone from the config.
    pub fn by_id(&self, id: &str) -> Option<Arc<Identity>> {
        if *self.anonymous.id == *id {
            return (!self.required).then(|| self.anonymous.clone());
        }
        self.by_id.get(id).cloned()
    }

    /// Resolves the presented key. A wrong or malformed key is rejected even
    /// when auth is optional: a typo should fail loudly, not silently run as
    /// anonymous.
    pub fn resolve(&self, presented: Presented<'_>) -> Result<Arc<Identity>, GatewayError> {
        match presented {
            Presented::Key(key) => self.by_digest.get(&sha256(key)).cloned().ok_or_else(|| {
                GatewayError::InvalidApiKey {
                    masked: mask_key(key),
                }
            }),
            Presented::Malformed => Err(GatewayError::InvalidApiKey {
                masked: "(not a printable key)".into(),
            }),
            Presented::Absent if self.required => Err(GatewayError::MissingApiKey),
            Presented::Absent => Ok(self.anonymous.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(required: bool) -> KeyStore {
        let keys = vec![KeyConfig {
            id: None,
            key: Some("sk-team-a-secret".into()),
            key_sha256: None,
            name: "team-a".into(),
            org: Some("eng".into()),
            models: Some(vec!["gpt-4o".into()]),
            tier: None,
            rpm: None,
            tpm: None,
            cache: true,
            priority: None,
            max_priority: None,
            queue_in_maintenance: false,
            budget: Default::default(),
            spend: Default::default(),
        }];
        KeyStore::new(
            &AuthConfig {
                required,
                ..Default::default()
            },
            &keys,
        )
    }

    #[test]
    fn resolves_known_key_and_rejects_others() {
        let keys = store(true);
        let identity = keys.resolve(Presented::Key("sk-team-a-secret")).unwrap();
        assert_eq!(&*identity.name, "team-a");
        assert!(identity.may_use("gpt-4o") && !identity.may_use("gpt-4.1"));
        assert!(matches!(
            keys.resolve(Presented::Key("sk-wrong-key-1234")),
            Err(GatewayError::InvalidApiKey { .. })
        ));
        assert!(matches!(
            keys.resolve(Presented::Absent),
            Err(GatewayError::MissingApiKey)
        ));
    }

    #[test]
    fn optional_auth_serves_anonymous_but_still_rejects_bad_keys() {
        let keys = store(false);
        assert_eq!(&*keys.resolve(Presented::Absent).unwrap().name, "anonymous");
        assert!(keys.resolve(Presented::Key("sk-wrong-key-1234")).is_err());
        assert!(keys.resolve(Presented::Malformed).is_err());
    }
}
