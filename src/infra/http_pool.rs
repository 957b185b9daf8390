//! The connection pool model calls (and OTLP exports) go through: hyper's
//! client over rustls, with nothing between the call and the pool.
//!
//! reqwest wraps each request in layers Sluice does not use (its redirect
//! policy, though told to follow none, re-parses the URL per call; retries;
//! a copy of the response headers): going around them cut a proxied call's
//! CPU by 15 to 22% in `cargo bench --bench proxy`. The Files and Batch
//! forwarding and the health probes, which are not on the request path,
//! keep reqwest. The pool's connection tasks are hyper's, as they were
//! reqwest's: each ends with its connection (idle ones after
//! `IDLE_TIMEOUT`), and in-flight calls are drained with the server's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

use super::workers::PerWorker;

/// How long a TCP connect may take (the call's own deadline bounds the TLS
/// handshake after it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle pooled connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host, all pools together: each of
/// `count` per-worker pools keeps its share, so a burst leaves no more
/// idle connections (and their buffers) behind than one pool did.
const IDLE_PER_HOST: usize = 512;

/// A pooled client: HTTP/1.1 or HTTP/2 (by ALPN on TLS).
pub type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the pool: the platform's trust store (as reqwest's was), aws-lc-rs
/// as the crypto provider, `TCP_NODELAY` on every connection. `http2_only`
/// (gRPC) speaks HTTP/2 on cleartext connections too, with prior knowledge.
pub fn pooled_client(http2_only: bool) -> Result<PooledClient, String> {
    Ok(pool(&connector()?, http2_only, IDLE_PER_HOST))
}

/// A pool per worker thread, over one TLS setup, so a pooled connection's
/// task runs on the thread of the calls it carries (`infra::workers`).
pub fn pooled_clients(count: usize) -> Result<PerWorker<PooledClient>, String> {
    let connector = connector()?;
    let idle = IDLE_PER_HOST.div_ceil(count.max(1));
    Ok(PerWorker::new(count, || pool(&connector, false, idle)))
}

fn connector() -> Result<HttpsConnector<HttpConnector>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| format!("cannot set up TLS for upstream calls: {e}"))?
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http))
}

fn pool(
    connector: &HttpsConnector<HttpConnector>,
    http2_only: bool,
    idle_per_host: usize,
) -> PooledClient {
    Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(idle_per_host)
        .build(connector.clone())
}
