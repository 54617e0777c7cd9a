//! `tlsfront health`: one blocking GET of the admin endpoint, for container
//! health checks (no curl in the image).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// GETs `url` (plain http). `Ok(status line)` on 200, `Err(reason)` otherwise.
pub fn check(url: &str, timeout: Duration) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("expected an http:// URL of the admin endpoint".into());
    }
    let authority = uri.authority().ok_or("the URL has no host")?;
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: tlsfront-health\r\n\r\n"
    )
    .map_err(|e| format!("cannot send: {e}"))?;
    let mut response = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .map_err(|e| format!("no answer: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("").trim().to_string();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(format!("{status_line} {body}").trim().to_string()),
        Some(_) => Err(format!("{status_line} {body}").trim().to_string()),
        None => Err("not an HTTP answer".into()),
    }
}
