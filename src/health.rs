//! `tlsfront health`: one blocking GET of the admin endpoint, for container
//! health checks (no curl in the image).

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why the admin endpoint did not say "healthy". The cases get different
/// exit codes: a script can tell "answered, not healthy" (e.g. 503 while
/// shutting down) from "nobody answered".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthError {
    /// The URL is not an `http://` URL with a host.
    InvalidUrl(String),
    /// The endpoint answered with a status other than 200 (the status line
    /// and body).
    Unhealthy(String),
    /// No HTTP answer: the name did not resolve, the connection was refused
    /// or timed out, or what came back was not HTTP.
    Unreachable(String),
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthError::InvalidUrl(m) | HealthError::Unhealthy(m) | HealthError::Unreachable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HealthError {}

/// GETs `url` (plain http). `Ok(status line and body)` on 200.
pub fn check(url: &str, timeout: Duration) -> Result<String, HealthError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| HealthError::InvalidUrl(format!("invalid URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(HealthError::InvalidUrl(
            "expected an http:// URL of the admin endpoint".into(),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| HealthError::InvalidUrl("the URL has no host".into()))?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let unreachable = HealthError::Unreachable;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| unreachable(format!("cannot resolve {host}")))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| unreachable(format!("cannot connect: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| unreachable(e.to_string()))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // One write: `write!` on the socket would send each piece as a packet of
    // its own, and a server that answers after its first read would close
    // with the rest unread (a reset that can destroy its answer).
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: tlsfront-health\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unreachable(format!("cannot send: {e}")))?;
    let mut response = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .map_err(|e| unreachable(format!("no answer: {e}")))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("").trim().to_string();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    let summary = format!("{status_line} {body}").trim().to_string();
    match status_line.split(' ').nth(1) {
        Some("200") if status_line.starts_with("HTTP/") => Ok(summary),
        Some(code) if status_line.starts_with("HTTP/") && code.parse::<u16>().is_ok() => {
            Err(HealthError::Unhealthy(summary))
        }
        _ => Err(unreachable("not an HTTP answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server answering `reply` to the first connection.
    fn serve_once(reply: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                // The whole request head first: closing with bytes unread
                // would reset the connection under the reply.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(reply);
            }
        });
        format!("http://{addr}/healthz")
    }

    #[test]
    fn answered_and_unanswered_are_told_apart() {
        let t = Duration::from_secs(3);
        assert!(check(&serve_once(b"HTTP/1.1 200 OK\r\n\r\nok\n"), t).is_ok());
        let e = check(
            &serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\nshutting down\n"),
            t,
        )
        .unwrap_err();
        assert_eq!(
            e,
            HealthError::Unhealthy("HTTP/1.1 503 Service Unavailable shutting down".into())
        );
        let e = check(&serve_once(b"SSH-2.0-OpenSSH\r\n"), t).unwrap_err();
        assert!(matches!(e, HealthError::Unreachable(_)), "{e:?}");
        // A port nobody listens on, held bound so that no test running at
        // the same time can be given it.
        let bound = tokio::net::TcpSocket::new_v4().unwrap();
        bound.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed = bound.local_addr().unwrap();
        let e = check(&format!("http://{closed}/healthz"), t).unwrap_err();
        assert!(
            matches!(e, HealthError::Unreachable(ref m) if m.starts_with("cannot connect")),
            "{e:?}"
        );
        assert!(matches!(
            check("https://127.0.0.1:1/", t),
            Err(HealthError::InvalidUrl(_))
        ));
    }
}
