//! Debian's nginx in the benches (`scripts/bench-deps.sh` installs it): as a
//! reverse proxy the way an operator configures one (the practical limit
//! for what a proxy hop costs), and as the fixed-answer upstream behind
//! every path. Each is `None`, with a note, when nginx is not installed.
#![allow(
    dead_code,
    clippy::print_stdout,
    reason = "shared by benches; says why nginx did not start"
)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{TempDir, stop_with_workers};

pub struct Nginx {
    /// The ports of the config's `server` blocks, in order.
    pub addrs: Vec<SocketAddr>,
    /// The master process; workers are its children.
    pub child: Child,
    _dir: TempDir,
}

impl Nginx {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
}

/// SIGTERM, so the master stops its workers (see `stop_with_workers`).
impl Drop for Nginx {
    fn drop(&mut self) {
        stop_with_workers(&mut self.child);
    }
}

/// The reverse proxy as nginx's own guide and an operator's config have it:
/// one worker per core, HTTP/1.1 to a keep-alive pool of 64, the default
/// buffering. The second server block proxies streams unbuffered
/// (`proxy_buffering off`, as an SSE proxy must be) to `stream_upstream`.
/// `/v1/realtime` carries WebSocket upgrades with the headers the guide
/// gives.
pub fn operator_proxy_config(upstream: SocketAddr, stream_upstream: SocketAddr) -> String {
    format!(
        "upstream up {{ server {upstream}; keepalive 64; }}\n\
         upstream up_stream {{ server {stream_upstream}; keepalive 64; }}\n\
         server {{\n  listen 127.0.0.1:{{port0}};\n\
         location / {{\n    proxy_pass http://up;\n    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n  }}\n\
         location /v1/realtime {{\n    proxy_pass http://up;\n    proxy_http_version 1.1;\n\
         proxy_set_header Upgrade $http_upgrade;\n    proxy_set_header Connection \"upgrade\";\n    proxy_read_timeout 3600s;\n  }}\n}}\n\
         server {{\n  listen 127.0.0.1:{{port1}};\n\
         location / {{\n    proxy_pass http://up_stream;\n    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n    proxy_buffering off;\n  }}\n}}\n"
    )
}

/// nginx answering every request itself with a fixed body: `json` on the
/// first port, `sse` (as `text/event-stream`) on the second. The fastest
/// upstream this machine has, so every path is measured against the same.
pub fn fixed_answers_config(json: &str, sse: &str) -> String {
    format!(
        "server {{\n  listen 127.0.0.1:{{port0}};\n  location / {{\n    default_type application/json;\n    return 200 '{json}';\n  }}\n}}\n\
         server {{\n  listen 127.0.0.1:{{port1}};\n  location / {{\n    default_type text/event-stream;\n    return 200 '{sse}';\n  }}\n}}\n"
    )
}

/// Starts nginx with `servers` (`server`/`upstream` blocks in which
/// `{port0}`, `{port1}`... name free ports) inside an `http` block with
/// the usual settings: a worker per core, no access log.
pub async fn start(servers: &str) -> Option<Nginx> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())?;
    let mut servers = servers.to_owned();
    let mut addrs = Vec::new();
    for index in 0.. {
        let name = format!("{{port{index}}}");
        if !servers.contains(&name) {
            break;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        servers = servers.replace(&name, &port.to_string());
        addrs.push(format!("127.0.0.1:{port}").parse::<SocketAddr>().ok()?);
    }
    let first = *addrs.first()?;
    let dir = TempDir::new(&format!("sluice-bench-nginx-{}", first.port()));
    let root = dir.0.display();
    let config = format!(
        "daemon off;\nworker_processes auto;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
         fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
         {servers}}}\n"
    );
    let path = dir.0.join("nginx.conf");
    std::fs::write(&path, config).ok()?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.0.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        let mut up = true;
        for addr in &addrs {
            up &= tokio::net::TcpStream::connect(addr).await.is_ok();
        }
        if up {
            return Some(Nginx {
                addrs,
                child,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
    println!("nginx did not start: {log}");
    None
}
