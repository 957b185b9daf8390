//! Model calls to an HTTPS upstream, against the real binary: the
//! certificate is verified against the system's trust store (here the
//! test's CA, named by `SSL_CERT_FILE` as an operator with a private CA
//! would), HTTP/2 is chosen by ALPN when the upstream offers it, and an
//! upstream whose certificate does not verify is never sent the call.
//!
//! The certificates in `tests/fixtures/tls` are a test CA and a
//! `localhost`/`127.0.0.1` certificate it signed, valid until 2126:
//! made with `openssl` as `tests/fixtures/tls/README.md` says.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::gateway::chat;
use common::process::{SluiceProcess, TempDir, free_port};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const ANSWER: &str = r#"{"id":"chatcmpl-tls","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"over TLS"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// An HTTPS upstream offering `alpn`; it records each request's HTTP version.
struct TlsUpstream {
    addr: SocketAddr,
    versions: Arc<Mutex<Vec<http::Version>>>,
}

impl TlsUpstream {
    async fn start(alpn: &[&[u8]]) -> Self {
        Self::start_on("127.0.0.1", alpn).await
    }

    async fn start_on(ip: &str, alpn: &[&[u8]]) -> Self {
        let certs = CertificateDer::pem_file_iter(fixture("localhost.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("localhost.key")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let versions = Arc::new(Mutex::new(Vec::new()));
        let seen = versions.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    // A handshake the client refused ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: http::Request<_>| {
                        seen.lock().unwrap().push(request.version());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, versions }
    }

    fn versions(&self) -> Vec<http::Version> {
        self.versions.lock().unwrap().clone()
    }
}

/// The binary with one deployment at `https://{host}:{port}/v1`.
async fn sluice(upstream: &TlsUpstream, host: &str, env: &[(&str, &str)]) -> SluiceProcess {
    let dir = TempDir::new("sluice-upstream-tls");
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[auth]\nrequired = false\n[usage]\ndata_dir = \"{data}\"\n[[deployments]]\nname = \"tls\"\nprovider = \"openai\"\nbase_url = \"https://{host}:{}/v1\"\napi_key = \"sk-upstream\"\nmodels = [\"gpt-4o\"]\n",
        upstream.addr.port(),
        // Its own: the tests run at once, and SQLite files cannot be shared.
        data = dir.join("data").display(),
    );
    SluiceProcess::start_with_env(&dir.0, "tls", port, &config, env)
        .await
        .owning(dir)
}

async fn call(sluice: &SluiceProcess) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sluice.url))
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_verified_upstream_gets_http2_by_alpn_and_http1_when_it_offers_only_that() {
    let ca = fixture("ca.pem");
    let trust = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    for (alpn, expected) in [
        (&[&b"h2"[..], b"http/1.1"][..], http::Version::HTTP_2),
        (&[&b"http/1.1"[..]][..], http::Version::HTTP_11),
    ] {
        let upstream = TlsUpstream::start(alpn).await;
        for host in ["localhost", "127.0.0.1"] {
            let sluice = sluice(&upstream, host, &trust).await;
            for _ in 0..3 {
                let (status, body) = call(&sluice).await;
                assert_eq!(status, 200, "{body} {}", sluice.log_text());
                assert_eq!(body["choices"][0]["message"]["content"], "over TLS");
            }
        }
        let versions = upstream.versions();
        assert_eq!(versions.len(), 6);
        assert!(
            versions.iter().all(|version| *version == expected),
            "{versions:?}"
        );
    }
}

#[tokio::test]
async fn an_upstream_whose_certificate_does_not_verify_is_never_called() {
    let upstream = TlsUpstream::start(&[b"h2", b"http/1.1"]).await;
    // The system's own roots do not include the test CA.
    let untrusted = sluice(&upstream, "localhost", &[]).await;
    // Trusted CA, but an address the certificate does not name.
    let elsewhere = TlsUpstream::start_on("127.0.0.2", &[b"h2", b"http/1.1"]).await;
    let ca = fixture("ca.pem");
    let trust = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let misnamed = sluice(&elsewhere, "127.0.0.2", &trust).await;
    for sluice in [&untrusted, &misnamed] {
        let (status, body) = call(sluice).await;
        assert!(status == 502 || status == 503, "{status} {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let log = sluice.log_text();
        assert!(!message.contains("sk-upstream"), "{message}");
        assert!(!log.contains("sk-upstream"), "{log}");
        assert!(log.to_lowercase().contains("certificate"), "{log}");
    }
    assert!(upstream.versions().is_empty(), "{:?}", upstream.versions());
    assert!(
        elsewhere.versions().is_empty(),
        "{:?}",
        elsewhere.versions()
    );
}
