//! Realtime sessions (`GET /v1/realtime`, a WebSocket). The stages have
//! authenticated the key (a header, or a browser's subprotocol), checked
//! its model and budgets and counted the session against its RPM. Here the
//! key's open sessions are capped, a deployment of the model is connected
//! (the next one when one cannot be reached, before the client is
//! answered), the client's upgrade is accepted, and the two sockets are
//! joined on a task of the gateway's own. The session's tokens, summed
//! from its responses' `usage`, are metered and billed when it ends.

pub(crate) mod bridge;
pub(crate) mod handshake;

use std::sync::Arc;

use axum::response::Response;
use dashmap::DashMap;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::call::ApiRequest;
use crate::config::RealtimeConfig;
use crate::engines::routing::Backend;
use crate::upstream::realtime::{Opening, RealtimeUpstream};
use crate::util::shutdown::Cut;
use crate::util::tasks::Tasks;
use crate::vocab::error::GatewayError;
use crate::vocab::{Outcome, Served, ServedBy, UsageHooks};

/// Each key's open sessions on this replica.
#[derive(Default)]
pub struct Sessions {
    open: DashMap<Arc<str>, usize>,
}

/// One open session, counted until it drops.
pub struct SessionSlot {
    sessions: Arc<Sessions>,
    key: Arc<str>,
}

impl Sessions {
    /// A slot for `key`, if it has fewer than `max` sessions open.
    pub fn claim(self: &Arc<Self>, key: &Arc<str>, max: usize) -> Option<SessionSlot> {
        let mut open = self.open.entry(key.clone()).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(SessionSlot {
            sessions: self.clone(),
            key: key.clone(),
        })
    }

    /// Sessions open now, all keys together.
    pub fn count(&self) -> usize {
        self.open.iter().map(|entry| *entry.value()).sum()
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.sessions.open.remove_if_mut(&self.key, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

/// What the dispatcher opens sessions with.
pub struct Realtime {
    pub config: RealtimeConfig,
    pub sessions: Arc<Sessions>,
    pub tasks: Tasks,
    pub cut: Cut,
}

/// The call as the dispatcher hands it over.
pub struct SessionCall {
    pub parts: http::request::Parts,
    pub api: ApiRequest,
    pub caller: Arc<str>,
    pub hooks: UsageHooks,
    pub pricing: Arc<crate::engines::metering::Pricing>,
}

impl Realtime {
    pub async fn open(&self, call: SessionCall) -> Result<Response, GatewayError> {
        let SessionCall {
            mut parts,
            api,
            caller,
            hooks,
            pricing,
        } = call;
        let handshake = handshake::check(&parts.headers)?;
        let max = self.config.max_sessions_per_key;
        let slot = self
            .sessions
            .claim(&caller, max)
            .ok_or(GatewayError::TooManySessions { max })?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(GatewayError::WebSocketRequired)?;
        let beta = parts.headers.get("openai-beta").cloned().or_else(|| {
            handshake
                .beta_protocol
                .then(|| http::HeaderValue::from_static("realtime=v1"))
        });
        let (backend, upstream) = self.connect(&api, beta.as_ref()).await?;
        let served_by = ServedBy {
            model: api.route.name.clone(),
            deployment: backend.deployment.name.clone(),
        };
        hooks.served_by(Served {
            model: api.route.name.clone(),
            deployment: backend.deployment.name.clone(),
            price: pricing.price(&api.route.name).copied(),
        });
        let limits = bridge::Limits {
            idle: self.config.idle_timeout,
            total: self.config.max_session,
            cut: self.cut.clone(),
        };
        let socket_config = WebSocketConfig::default()
            .max_message_size(Some(self.config.max_message_bytes))
            .max_frame_size(Some(self.config.max_message_bytes));
        self.tasks.spawn(async move {
            let _slot = slot;
            let Ok(upgraded) = on_upgrade.await else {
                hooks.finish(Outcome::NoOutput);
                return;
            };
            let client = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(socket_config),
            )
            .await;
            let metered = bridge::run(client, upstream, limits).await;
            hooks.finish(if metered.responses > 0 {
                Outcome::Reported(metered.usage)
            } else {
                Outcome::NoOutput
            });
        });
        let mut response = handshake.accept();
        // For the access log and the metrics, as any answer carries it.
        response.extensions_mut().insert(served_by);
        Ok(response)
    }

    /// The first deployment of the route, in priority order, that opens a
    /// session; an unreachable one is passed over before the client is
    /// answered.
    async fn connect(
        &self,
        api: &ApiRequest,
        beta: Option<&http::HeaderValue>,
    ) -> Result<(Arc<Backend>, RealtimeUpstream), GatewayError> {
        let now = tokio::time::Instant::now();
        let mut last_error = None;
        for backend in api.route.backends() {
            if backend.health.usable(now).is_err() {
                continue;
            }
            let opening = Opening {
                client_model: &api.route.name,
                beta,
                max_message_bytes: self.config.max_message_bytes,
                timeout: backend.deployment.timeout,
            };
            match backend.deployment.open_realtime(opening).await {
                Ok(upstream) => return Ok((backend.clone(), upstream)),
                Err(error) => {
                    tracing::warn!(deployment = %backend.deployment.name, %error, "cannot open a Realtime session; trying the next deployment");
                    last_error = Some((backend.deployment.name.to_string(), error));
                }
            }
        }
        Err(match last_error {
            Some((deployment, error)) => GatewayError::Upstream {
                deployment,
                reason: error.to_string(),
            },
            None => GatewayError::NoDeployment {
                model: api.route.name.to_string(),
                retry_after: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_sessions_are_capped_and_freed_on_drop() {
        let sessions = Arc::new(Sessions::default());
        let key: Arc<str> = Arc::from("k");
        let first = sessions.claim(&key, 2).unwrap();
        let second = sessions.claim(&key, 2).unwrap();
        assert!(sessions.claim(&key, 2).is_none());
        assert!(sessions.claim(&Arc::from("other"), 2).is_some());
        drop(first);
        assert_eq!(sessions.count(), 1);
        assert!(sessions.claim(&key, 2).is_some());
        drop(second);
        assert_eq!(sessions.count(), 0);
    }
}
