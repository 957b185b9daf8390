//! The admin console's files: served by the binary on the admin routes
//! (the admin listener when there is one), only with an admin token set,
//! with headers that forbid framing and any other origin's script, style
//! or connection. (What the page does is for a browser test.)
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

use common::gateway::deployment;
use common::{FakeUpstream, TestGateway};

const TOKEN: &str = "admin-token-0123456789";

async fn get(
    gateway: &TestGateway,
    addr: Option<std::net::SocketAddr>,
    path: &str,
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = match addr {
        Some(addr) => TestGateway::url_at(Some(addr), path),
        None => gateway.url(path),
    };
    client.get(url).send().await.unwrap()
}

#[tokio::test]
async fn the_console_is_served_with_strict_headers_and_only_with_a_token() {
    let upstream = FakeUpstream::start("oa").await;
    let config = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n{}",
        deployment("oa", &upstream, "")
    );
    let gateway = TestGateway::start(&config).await;
    let page = get(&gateway, None, "/admin/console/").await;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("console.js") && !html.contains("<script>"),
        "no inline script"
    );
    let script = get(&gateway, None, "/admin/console/console.js").await;
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let script = script.text().await.unwrap();
    assert!(
        !script.contains("innerHTML") && !script.contains("eval("),
        "text only"
    );
    assert!(!script.contains("localStorage") && !script.contains("document.cookie"));
    let style = get(&gateway, None, "/admin/console/console.css").await;
    assert_eq!(style.status(), 200);
    let bare = get(&gateway, None, "/admin/console").await;
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/admin/console/");

    let without = TestGateway::start(&deployment("oa", &upstream, "")).await;
    assert_eq!(get(&without, None, "/admin/console/").await.status(), 404);
}

#[tokio::test]
async fn with_an_admin_listener_the_console_is_only_there() {
    let upstream = FakeUpstream::start("oa").await;
    let config = format!(
        "[admin]\ntoken = \"{TOKEN}\"\nlisten = \"127.0.0.1:0\"\n{}",
        deployment("oa", &upstream, "")
    );
    let gateway = TestGateway::start(&config).await;
    assert_eq!(get(&gateway, None, "/admin/console/").await.status(), 404);
    let apart = get(&gateway, gateway.admin_addr, "/admin/console/").await;
    assert_eq!(apart.status(), 200);
}
