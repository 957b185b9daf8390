//! nginx as a plain reverse proxy in front of the same upstream: the
//! practical limit for what a proxy hop costs, measured in the same run.
//! Started from Debian's `nginx` binary (`scripts/bench-deps.sh` installs
//! it); `None`, with a note, when it is not installed.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Proxies everything to `upstream` over pooled keep-alive connections,
/// unbuffered (as an SSE proxy must be), with one worker per core; Realtime
/// WebSockets with the upgrade headers nginx's own guide gives.
pub async fn start(upstream: SocketAddr) -> Option<Nginx> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = TempDir(std::env::temp_dir().join(format!("sluice-bench-nginx-{port}")));
    std::fs::create_dir_all(&dir.0).ok()?;
    let root = dir.0.display();
    let config = format!(
        "daemon off;\nworker_processes auto;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
         fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
         upstream up {{ server {upstream}; keepalive 128; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n\
         location /v1/realtime {{\n      proxy_pass http://up;\n      proxy_http_version 1.1;\n\
         proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
         proxy_read_timeout 3600s;\n    }}\n  }}\n}}\n"
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
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Some(Nginx {
                addr,
                child,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
