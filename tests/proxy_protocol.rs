//! Black-box tests of `listen.proxy_protocol`: the real binary, real sockets,
//! PROXY v1/v2 headers written by hand (not by tlsfront's own encoder), and a
//! real TLS handshake after them. The client's ClientHello goes out in the
//! same write as the header (or right behind the header's last piece), so a
//! proxy that read one byte past the header would break the handshake.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{echoed, echoed_headers, plain_get, Proxy};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpSocket;

/// Trusts 127.0.0.1 only: tests that play an untrusted balancer connect from 127.0.0.2.
const CONFIG: &str = r#"
[listen]
proxy_protocol = true
proxy_protocol_timeout = "500ms"
[forwarded]
trusted_proxies = ["127.0.0.1"]
x_real_ip = true
forwarded = true
[log]
access = "json"
[admin]
listen = "127.0.0.1:0"
"#;

const TRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A blocking TCP connection to `to` from `from` (any port).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

fn client_config(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Sends `pieces` (a PROXY header, whole or split, 50 ms apart), the last one
/// in the same write as the TLS ClientHello, then a GET for `path` over
/// TLS. Returns the HTTP response as text, or the error that ended it.
async fn get_after_header(
    proxy: &Proxy,
    from: Ipv4Addr,
    pieces: Vec<Vec<u8>>,
    path: &str,
    extra_header: &str,
) -> Result<String, String> {
    let tcp = connect_from(from, proxy.addr()).await;
    let config = client_config(&proxy.ca());
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_header}Connection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut tcp = tcp;
        let mut tls = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut hello = Vec::new();
        tls.write_tls(&mut hello).unwrap();
        let (last, first) = pieces.split_last().expect("at least one piece");
        for piece in first {
            tcp.write_all(piece).map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(50));
        }
        tcp.write_all(&[last.as_slice(), &hello].concat())
            .map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        match stream.read_to_end(&mut out) {
            Ok(_) => {}
            // A peer that closes without close_notify after the whole response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
            Err(e) => return Err(e.to_string()),
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .unwrap()
}

/// What tlsfront sends back, as raw bytes, to `bytes` sent from `from`; and
/// how long until it closed. Reading stops at close (EOF or reset).
async fn raw_exchange(proxy: &Proxy, from: Ipv4Addr, bytes: Vec<u8>) -> (Vec<u8>, Duration) {
    raw_exchange_with(proxy.addr(), from, bytes).await
}

/// [`raw_exchange`] with any listener of tlsfront's.
async fn raw_exchange_with(to: SocketAddr, from: Ipv4Addr, bytes: Vec<u8>) -> (Vec<u8>, Duration) {
    let tcp = connect_from(from, to).await;
    tokio::task::spawn_blocking(move || {
        let mut tcp = tcp;
        let started = Instant::now();
        // The peer may close before everything is written: that is the point.
        let _ = tcp.write_all(&bytes);
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("no close within the read timeout: {e}"),
            }
        }
        (out, started.elapsed())
    })
    .await
    .unwrap()
}

/// A ClientHello for `localhost`, as a real client sends it.
fn client_hello(proxy: &Proxy) -> Vec<u8> {
    let mut tls =
        rustls::ClientConnection::new(client_config(&proxy.ca()), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    hello
}

/// The request the app received, from the echo body.
fn app_saw(response: &str) -> Vec<(String, String)> {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    echoed_headers(body)
}

fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(addresses.len() + tlvs.len()).unwrap().to_be_bytes());
    h.extend_from_slice(addresses);
    h.extend_from_slice(tlvs);
    h
}

async fn metric(proxy: &Proxy, reason: &str) -> u64 {
    let (_, text) = plain_get(proxy.admin_port(), "/metrics").await;
    let needle = format!("tlsfront_proxy_protocol_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .unwrap_or_else(|| panic!("{needle} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The `client_ip` of each access-log line so far, waiting (bounded) for `n`.
fn logged_clients(proxy: &Proxy, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = proxy
            .stdout()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON access-log line");
                v["client_ip"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} of {n} access-log lines", lines.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// v1 TCP4 and TCP6: the address in the header is the client for every
/// header the app gets and for the access log, and it decides trust: the
/// balancer (127.0.0.1) is trusted, the client it reports is not, so the
/// client's forged X-Forwarded-For is dropped.
#[tokio::test]
async fn v1_client_ip_reaches_the_app_and_the_access_log() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, up.addr);
    let cases = [
        (
            "PROXY TCP4 203.0.113.7 127.0.0.1 51234 443\r\n",
            "203.0.113.7",
            "203.0.113.7",
        ),
        (
            "PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n",
            "2001:db8::7",
            "\"[2001:db8::7]\"",
        ),
    ];
    for (header, ip, forwarded_for) in cases {
        let response = get_after_header(
            &proxy,
            TRUSTED,
            vec![header.as_bytes().to_vec()],
            "/echo/v1",
            "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n",
        )
        .await
        .unwrap();
        let h = app_saw(&response);
        assert_eq!(echoed(&h, "x-forwarded-for"), vec![ip], "{response}");
        assert_eq!(echoed(&h, "x-real-ip"), vec![ip], "{response}");
        let forwarded = echoed(&h, "forwarded");
        assert_eq!(forwarded.len(), 1, "{response}");
        assert!(
            forwarded[0].starts_with(&format!("for={forwarded_for};proto=https")),
            "{response}"
        );
    }
    assert_eq!(logged_clients(&proxy, 2), ["203.0.113.7", "2001:db8::7"]);
}

/// A header that trickles in three pieces, then TLS right behind it.
#[tokio::test]
async fn v1_header_in_pieces() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, up.addr);
    let pieces = ["PROXY TC", "P4 198.51.100.9 127.0.0.1 4", "0000 443\r", "\n"];
    let response = get_after_header(
        &proxy,
        TRUSTED,
        pieces.iter().map(|p| p.as_bytes().to_vec()).collect(),
        "/echo/pieces",
        "",
    )
    .await
    .unwrap();
    assert_eq!(echoed(&app_saw(&response), "x-forwarded-for"), vec!["198.51.100.9"]);
}

/// v2 over IPv4 and IPv6 with TLVs as cloud balancers send them (ALPN,
/// authority, CRC32C, NOOP padding, an AWS VPC-endpoint TLV): skipped.
#[tokio::test]
async fn v2_with_tlvs_carries_the_client_ip() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, up.addr);
    let mut tlvs = Vec::new();
    tlvs.extend_from_slice(&[0x01, 0, 2, b'h', b'2']);
    tlvs.extend_from_slice(&[0x02, 0, 9]);
    tlvs.extend_from_slice(b"localhost");
    tlvs.extend_from_slice(&[0x03, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
    tlvs.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]);
    tlvs.extend_from_slice(&[0xEA, 0, 23, 0x01]);
    tlvs.extend_from_slice(b"vpce-08d2bf15fac5001c9");
    let mut v4 = vec![198, 51, 100, 23, 127, 0, 0, 1];
    v4.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
    let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x23];
    v6.extend_from_slice(&[0; 15]);
    v6.push(1);
    v6.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
    for (header, ip) in [
        (v2_header(0x21, 0x11, &v4, &tlvs), "198.51.100.23"),
        (v2_header(0x21, 0x21, &v6, &tlvs), "2001:db8::23"),
    ] {
        let response = get_after_header(&proxy, TRUSTED, vec![header], "/echo/v2", "")
            .await
            .unwrap();
        let h = app_saw(&response);
        assert_eq!(echoed(&h, "x-forwarded-for"), vec![ip], "{response}");
        assert_eq!(echoed(&h, "x-real-ip"), vec![ip], "{response}");
    }
    assert_eq!(logged_clients(&proxy, 2), ["198.51.100.23", "2001:db8::23"]);
}

/// v2 LOCAL (a balancer's health check) and v1 UNKNOWN: accepted, and the
/// connection's own peer is the client.
#[tokio::test]
async fn v2_local_and_v1_unknown_use_the_connection_peer() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, up.addr);
    let mut ignored = vec![10, 9, 9, 9, 127, 0, 0, 1, 0, 1, 0, 2];
    ignored.extend_from_slice(&[0x04, 0, 1, 0]);
    for header in [
        v2_header(0x20, 0x00, &[], &[]),
        // LOCAL with an address block: still ignored.
        v2_header(0x20, 0x11, &ignored, &[]),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN 10.9.9.9 127.0.0.1 1 2\r\n".to_vec(),
    ] {
        let response = get_after_header(&proxy, TRUSTED, vec![header], "/echo/local", "")
            .await
            .unwrap();
        assert_eq!(echoed(&app_saw(&response), "x-forwarded-for"), vec!["127.0.0.1"]);
    }
    assert_eq!(logged_clients(&proxy, 4), ["127.0.0.1"; 4]);
}

/// Without a header, with a broken one, or from a peer that is not a trusted
/// proxy: closed, not one byte back (no TLS alert, no HTTP 400), counted.
#[tokio::test]
async fn connections_without_a_valid_trusted_header_are_closed_silently() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, up.addr);
    let hello = client_hello(&proxy);
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 443\r\n".to_vec();
    let cases = [
        ("plain TLS", TRUSTED, hello.clone(), "missing"),
        (
            "plain HTTP",
            TRUSTED,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "missing",
        ),
        (
            "bad v1",
            TRUSTED,
            [b"PROXY TCP4 203.0.113.7 ::1 1 2\r\n".as_slice(), &hello].concat(),
            "invalid",
        ),
        (
            "bad v2 version",
            TRUSTED,
            [v2_header(0x11, 0x11, &[0; 12], &[]), hello.clone()].concat(),
            "invalid",
        ),
        (
            "untrusted peer",
            UNTRUSTED,
            [header.as_slice(), &hello].concat(),
            "untrusted_peer",
        ),
    ];
    for (what, from, bytes, reason) in cases {
        let before = metric(&proxy, reason).await;
        let (answer, _) = raw_exchange(&proxy, from, bytes).await;
        assert!(answer.is_empty(), "{what}: got {} bytes back", answer.len());
        // Counted by its reason: closed for it, not by the timeout.
        assert_eq!(metric(&proxy, reason).await, before + 1, "{what}");
    }
    // None of them reached the app.
    assert!(proxy.stdout().is_empty(), "{}", proxy.stdout());
}

/// A header that stops halfway is waited for `proxy_protocol_timeout`
/// (500 ms here), no longer; then the connection is closed without a byte.
#[tokio::test]
async fn a_truncated_header_times_out_within_the_bound() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, up.addr);
    for partial in [
        b"PROXY TCP4 203.0.113.7 127.0.0.1 ".to_vec(),
        v2_header(
            0x21,
            0x11,
            &[198, 51, 100, 23, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb],
            &[],
        )[..20]
            .to_vec(),
    ] {
        let before = metric(&proxy, "timeout").await;
        let (answer, took) = raw_exchange(&proxy, TRUSTED, partial).await;
        assert!(answer.is_empty(), "got {} bytes back", answer.len());
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(2000),
            "closed after {took:?}"
        );
        assert_eq!(metric(&proxy, "timeout").await, before + 1);
    }
}

/// After a valid header the existing behaviours of the TLS port hold: plain
/// HTTP still gets the 400 that says to use https (the peek for the TLS
/// record type looks at the bytes after the header).
#[tokio::test]
async fn plain_http_after_a_header_gets_the_https_hint() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(CONFIG, up.addr);
    let bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 443\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    let (answer, _) = raw_exchange(&proxy, TRUSTED, bytes).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("this port speaks HTTPS"), "{answer}");
}

/// The `listen.http` redirect listener expects the header too: with one it
/// redirects, without one (or from an untrusted peer) it closes silently.
#[tokio::test]
async fn the_redirect_listener_expects_the_header_too() {
    let up = Upstream::start().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = CONFIG.replace("[listen]\n", &format!("[listen]\nhttp = \"{free}\"\n"));
    let proxy = Proxy::start(&config, up.addr);
    let request = b"GET /a HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n";
    let exchange = |from: Ipv4Addr, bytes: Vec<u8>| async move {
        let tcp = connect_from(from, free).await;
        tokio::task::spawn_blocking(move || {
            let mut tcp = tcp;
            let _ = tcp.write_all(&bytes);
            let mut out = Vec::new();
            let _ = tcp.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
        .await
        .unwrap()
    };
    let with_header = [b"PROXY TCP4 203.0.113.7 127.0.0.1 5 80\r\n".as_slice(), request].concat();
    let answer = exchange(TRUSTED, with_header.clone()).await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    // Refused: closed at once without a byte (raw_exchange_with fails on a
    // connection held open), and counted by its reason, not by the timeout.
    for (what, from, bytes, reason) in [
        ("no header", TRUSTED, request.to_vec(), "missing"),
        ("untrusted peer", UNTRUSTED, with_header, "untrusted_peer"),
    ] {
        let before = metric(&proxy, reason).await;
        let (answer, took) = raw_exchange_with(free, from, bytes).await;
        assert!(answer.is_empty(), "{what}: got {:?}", String::from_utf8_lossy(&answer));
        assert!(took < Duration::from_secs(5), "{what}: closed only after {took:?}");
        assert_eq!(metric(&proxy, reason).await, before + 1, "{what}");
    }
    drop(proxy);
}

/// `tlsfront check`: `proxy_protocol = true` with nobody trusted to send the
/// header is refused in one line (exit 2); with a trusted proxy it passes
/// and the effective settings show it.
#[test]
fn check_refuses_proxy_protocol_without_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        std::fs::write(dir.path().join("t.toml"), text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_tlsfront"))
            .args(["check", "-c", "t.toml"])
            .current_dir(dir.path())
            .env_remove("TLSFRONT_CONFIG")
            .output()
            .unwrap()
    };
    let o = check("[listen]\nproxy_protocol = true\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("listen.proxy_protocol") && err.contains("forwarded.trusted_proxies is empty"),
        "{err}"
    );
    let o = check("[listen]\nproxy_protocol = true\n[forwarded]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("proxy_protocol = true\nproxy_protocol_timeout = \"5s\"\n"),
        "{out}"
    );
}
