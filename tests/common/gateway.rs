//! Starts Sluice in-process on an ephemeral port.

use std::collections::HashMap;
use std::net::SocketAddr;

use sluice::config::{Config, load_from_str};
use sluice::server::{Gateway, Listeners};
use tokio::sync::oneshot;

pub struct TestGateway {
    pub addr: SocketAddr,
    /// The `[admin] listen` and `[metrics] listen` listeners, when configured.
    pub admin_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    /// `toml` may omit `[server]`; the listen address is always ephemeral.
    pub async fn start(toml: &str) -> Self {
        Self::start_with_env(toml, &HashMap::new()).await
    }

    /// Without a `[usage]` section the ledger is off, without an `[admin]
    /// keys_store` the runtime keys store is, and without a `[batch]` section
    /// the job store is, so tests do not write `data/usage.db`,
    /// `data/keys.sqlite` or `data/jobs.sqlite` into the checkout.
    pub async fn start_with_env(toml: &str, env: &HashMap<String, String>) -> Self {
        let mut env = env.clone();
        if !toml.contains("[usage]") {
            env.insert("SLUICE__USAGE__STORE".into(), "none".into());
        }
        if !toml.contains("keys_store") {
            env.insert("SLUICE__ADMIN__KEYS_STORE".into(), "none".into());
        }
        // Nor `data/jobs.sqlite`, which tests running at once would share.
        if !toml.contains("[batch]") {
            env.insert("SLUICE__BATCH__STORE".into(), "none".into());
        }
        let config = load_from_str(toml, "test", &env).unwrap();
        Self::start_config(config).await
    }

    /// Every listener is ephemeral, whatever the config's addresses.
    pub async fn start_config(config: Config) -> Self {
        let gateway = Gateway::build(&config).unwrap();
        Self::serve(gateway, &config).await
    }

    /// A gateway on the config file at `path`, reloadable from it (SIGHUP
    /// aside: the test runner shares the process). The file must name its
    /// own `[usage]` and `[admin] keys_store`: reloads read the process
    /// environment, which tests leave alone.
    pub async fn start_file(path: &std::path::Path) -> Self {
        let config = sluice::config::load_from_path(path).unwrap();
        let gateway = Gateway::from_file(config.clone(), path.to_owned()).unwrap();
        Self::serve(gateway, &config).await
    }

    async fn serve(gateway: Gateway, config: &Config) -> Self {
        let listeners = Listeners {
            api: ephemeral().await,
            admin: match &config.admin.listen {
                Some(_) => Some(ephemeral().await),
                None => None,
            },
            metrics: match &config.metrics.listen {
                Some(_) => Some(ephemeral().await),
                None => None,
            },
        };
        let addr = listeners.api.local_addr().unwrap();
        let address = |listener: &Option<tokio::net::TcpListener>| {
            listener.as_ref().map(|l| l.local_addr().unwrap())
        };
        let (admin_addr, metrics_addr) = (address(&listeners.admin), address(&listeners.metrics));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gateway
                .serve(listeners, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            admin_addr,
            metrics_addr,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A handle on a gateway running elsewhere (another runtime), for its
    /// API only: dropping it stops nothing.
    pub fn attach(addr: SocketAddr) -> Self {
        Self {
            addr,
            admin_addr: None,
            metrics_addr: None,
            client: reqwest::Client::new(),
            shutdown: None,
            task: None,
        }
    }

    /// A URL on another of the gateway's listeners.
    pub fn url_at(addr: Option<SocketAddr>, path: &str) -> String {
        format!("http://{}{path}", addr.unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs JSON with a bearer key.
    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.unwrap()
    }

    /// GETs `path` with a bearer key.
    pub async fn get_as(&self, key: &str, path: &str) -> reqwest::Response {
        let request = self.client.get(self.url(path)).bearer_auth(key);
        request.send().await.unwrap()
    }

    /// GETs `path`, with a bearer key if given, and parses the JSON answer.
    pub async fn get_json(&self, path: &str, key: Option<&str>) -> serde_json::Value {
        let mut request = self.client.get(self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// `POST /admin/reload` with the admin `token`; it must answer 200.
    pub async fn reload(&self, token: &str) {
        let url = self.url("/admin/reload");
        let response = self
            .client
            .post(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// Makes a runtime key named `name` through `/admin/keys` with the
    /// admin `token`: its id and its secret (shown this once).
    pub async fn create_key(&self, token: &str, name: &str) -> (String, String) {
        let response = self
            .post(
                "/admin/keys",
                Some(token),
                &serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(response.status(), 201);
        let created: serde_json::Value = response.json().await.unwrap();
        let field = |name: &str| created[name].as_str().unwrap().to_owned();
        (field("id"), field("key"))
    }

    /// Revokes the runtime key `id` through `/admin/keys/{id}`.
    pub async fn revoke_key(&self, token: &str, id: &str) {
        let response = self
            .client
            .delete(self.url(&format!("/admin/keys/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// The Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn ephemeral() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A `[[deployments]]` entry for an OpenAI-style fake upstream serving
/// `gpt-4o`; `extra` adds lines such as `priority = 1`.
pub fn deployment(name: &str, upstream: &super::FakeUpstream, extra: &str) -> String {
    format!(
        "[[deployments]]\nname = \"{name}\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o\"]\n{extra}\n",
        upstream.base_url()
    )
}

/// A chat request body.
pub fn chat(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// The four-key OpenAI error object of a response body.
pub async fn error_of(response: reqwest::Response) -> serde_json::Map<String, serde_json::Value> {
    let body: serde_json::Value = response.json().await.unwrap();
    let error = body["error"]
        .as_object()
        .expect("an OpenAI error body")
        .clone();
    for key in ["message", "type", "param", "code"] {
        assert!(error.contains_key(key), "error body lacks `{key}`: {body}");
    }
    error
}

/// `gpt-4.1` falling back to `gpt-4.1-mini`: deployment `big` serves the
/// first and throttles every call (429, `retry-after: 30`), `small` serves
/// the second. Returns both upstreams and the config lines.
pub async fn throttled_with_fallback() -> (super::FakeUpstream, super::FakeUpstream, String) {
    let big = super::FakeUpstream::start("big").await;
    let small = super::FakeUpstream::start("small").await;
    big.set_default(super::Behavior::Reply {
        status: 429,
        headers: vec![("retry-after", "30".into())],
        body: r#"{"error":{"message":"busy","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    });
    let config = format!(
        "[models.\"gpt-4.1\"]\nfallbacks = [\"gpt-4.1-mini\"]\n[[deployments]]\nname = \"big\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4.1\"]\n[[deployments]]\nname = \"small\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4.1-mini\"]\n",
        big.base_url(),
        small.base_url()
    );
    (big, small, config)
}
