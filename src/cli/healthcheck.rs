//! `sluice healthcheck`: asks the gateway on this host whether it is ready
//! (`GET /readyz` on the configured API listener) and exits 0 only on a 200
//! within two seconds. It is what the image's `HEALTHCHECK` runs: a slim
//! image has no curl. It opens no store and writes nothing, so it works on a
//! read-only root filesystem beside a running gateway.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The whole check, connection to status line.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// The longest status line and headers read.
const MAX_HEAD: usize = 8 * 1024;

/// `Ok` with the status line when `/readyz` on `listen` answered 200.
pub fn check(listen: &str) -> Result<String, String> {
    let started = Instant::now();
    let address = target(listen)?;
    let left = || {
        DEADLINE
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    };
    let mut stream = TcpStream::connect_timeout(&address, left())
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    stream
        .set_write_timeout(Some(left()))
        .and_then(|()| {
            stream.write_all(
                format!("GET /readyz HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
        })
        .map_err(|error| format!("cannot send to {address}: {error}"))?;
    let status = read_status_line(&mut stream, &left)?;
    match status.split(' ').nth(1) {
        Some("200") => Ok(status),
        _ => Err(format!("{address} /readyz answered `{status}`")),
    }
}

/// Where to connect for `listen`: an unspecified address (`0.0.0.0`, `[::]`)
/// is reached on the loopback of its family.
fn target(listen: &str) -> Result<SocketAddr, String> {
    let mut address = listen
        .to_socket_addrs()
        .map_err(|error| format!("server.listen `{listen}`: {error}"))?
        .next()
        .ok_or_else(|| format!("server.listen `{listen}` names no address"))?;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(address)
}

fn read_status_line(stream: &mut TcpStream, left: &dyn Fn() -> Duration) -> Result<String, String> {
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 512];
    while !head.contains(&b'\n') {
        stream
            .set_read_timeout(Some(left()))
            .map_err(|error| error.to_string())?;
        let read = stream
            .read(&mut buffer)
            .map_err(|error| format!("no answer: {error}"))?;
        if read == 0 || head.len() > MAX_HEAD {
            return Err("the connection closed before a status line".to_owned());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        assert_eq!(
            target("0.0.0.0:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(target("[::]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            target("10.1.2.3:80").unwrap(),
            "10.1.2.3:80".parse().unwrap()
        );
        assert!(target("no port").is_err());
    }

    #[test]
    fn a_listener_that_never_answers_fails_within_the_deadline() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let started = Instant::now();
        let error = check(&address).unwrap_err();
        assert!(started.elapsed() < DEADLINE + Duration::from_millis(500));
        assert!(error.starts_with("no answer"), "{error}");
        drop(silent);
        assert!(check(&address).unwrap_err().starts_with("cannot connect"));
    }
}
