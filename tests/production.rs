//! Production behaviour, black-box: upgrades, limits and timeouts, graceful
//! shutdown, live reload, access log, admin endpoint, security headers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2raw::{frame, get_localhost, PREFACE};
use common::raw_upstream::{Behaviour, RawUpstream};
use common::upstream::Upstream;
use common::{echoed, echoed_headers, get, plain_get, read_until, tls_stream, Client, Proxy, RefusingAddr};
use http_body_util::Full;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

const WS_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn websocket_upgrade_tunnels_both_ways_and_survives_sigterm() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nshutdown_timeout = \"20s\"\n", up.addr);
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(WS_REQUEST).await.unwrap();
    let head = read_until(&mut tls, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: websocket") && head.contains("connection: upgrade"),
        "{head}"
    );
    for msg in [&b"hello"[..], &[0u8, 1, 2, 255][..], &vec![b'z'; 100_000][..]] {
        tls.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    // SIGTERM: the open tunnel keeps working until the client closes it.
    proxy.signal("TERM");
    proxy.wait_for_log("shutting down", Duration::from_secs(5));
    tls.write_all(b"after-term").await.unwrap();
    let mut back = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"after-term");
    drop(tls);
    let status = tokio::task::spawn_blocking(move || proxy.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn http2_refuses_extended_connect_so_browsers_use_http1_for_websockets() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nmax_concurrent_streams = 7\n", up.addr);
    let tls = tls_stream(&proxy, &[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client
        .send_request(
            http::Request::get(format!("https://localhost:{}/echo", proxy.port))
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert!(!client.is_extended_connect_protocol_enabled());
    assert_eq!(client.current_max_send_streams(), 7);
}

/// Reads server frames until a GOAWAY (returns its error code) or EOF (None).
async fn read_goaway<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<u32> {
    loop {
        let mut head = [0u8; 9];
        if tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
            .await
            .ok()?
            .is_err()
        {
            return None;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return None;
        }
        if head[3] == 7 {
            return Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
        }
    }
}

#[tokio::test]
async fn http2_rapid_reset_closes_the_abusive_connection_only() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nmax_pending_reset_streams = 20\n", up.addr);
    let mut tls = tls_stream(&proxy, &[b"h2"]).await;
    let mut burst = PREFACE.to_vec();
    burst.extend(frame(4, 0, 0, &[]));
    // HEADERS then RST_STREAM(CANCEL) for 1000 streams, in one write.
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(1, 0x5, id, &get_localhost()));
        burst.extend(frame(3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = tls.write_all(&burst).await;
    let code = read_goaway(&mut tls).await;
    // ENHANCE_YOUR_CALM (0xb): the connection is closed for abuse.
    assert_eq!(code, Some(0xb), "expected GOAWAY ENHANCE_YOUR_CALM");
    // Everyone else is still served.
    let mut c = Client::connect(&proxy, true).await;
    let (parts, _) = c.text(get(&proxy, "/echo", true).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nmax_request_header_bytes = 16384\n", up.addr);
    for size in [17_000usize, 200_000] {
        for h2 in [false, true] {
            let mut c = Client::connect(&proxy, h2).await;
            let req = get(&proxy, "/echo", h2)
                .header("x-big", "a".repeat(size))
                .body(empty())
                .unwrap();
            match &mut c {
                Client::H1(_) => {
                    // Raw bytes: the proxy answers and closes before it has read
                    // a big head, and hyper's client stops at the broken pipe.
                    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
                    let head = format!(
                        "GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
                        "a".repeat(size)
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let answer = read_until(&mut tls, b"\r\n\r\n").await;
                    let answer = String::from_utf8_lossy(&answer);
                    assert!(answer.starts_with("HTTP/1.1 431 "), "size {size} h1: {answer:?}");
                }
                Client::H2(s) => match s.send_request(req).await {
                    Ok(resp) => assert_eq!(resp.status(), 431, "size {size} h2"),
                    // A head several times the limit never gets a status: h2
                    // counts its CONTINUATION frames (or its decoded size) and
                    // closes the connection with GOAWAY ENHANCE_YOUR_CALM.
                    Err(e) if size > 4 * 16384 => {
                        let h2 = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<h2::Error>());
                        assert!(
                            h2.is_some_and(|h2| h2.is_go_away() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)),
                            "size {size} h2: {e:?}"
                        );
                    }
                    Err(e) => panic!("size {size} h2: expected 431, got {e:?}"),
                },
            }
        }
    }
    let mut c = Client::connect(&proxy, false).await;
    let (parts, _) = c
        .text(
            get(&proxy, "/echo", false)
                .header("x-ok", "a".repeat(8000))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nmax_request_body_bytes = 1000\n", up.addr);
    for h2 in [false, true] {
        let mut c = Client::connect(&proxy, h2).await;
        let req = |n: usize| {
            if h2 {
                http::Request::post(format!("https://localhost:{}/upload", proxy.port))
            } else {
                http::Request::post("/upload").header("host", "localhost")
            }
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
        };
        let (parts, body) = c.text(req(1000)).await;
        assert_eq!((parts.status.as_u16(), body.trim()), (200, "1000"));
        let (parts, _) = Client::connect(&proxy, h2).await.text(req(5000)).await;
        assert_eq!(parts.status, 413, "h2={h2}");
    }
    // Chunked, no length announced: cut off while streaming.
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..5 {
        tls.write_all(b"258\r\n").await.unwrap();
        tls.write_all(&[b'y'; 600]).await.unwrap();
        tls.write_all(b"\r\n").await.unwrap();
    }
    tls.write_all(b"0\r\n\r\n").await.unwrap();
    let head = read_until(&mut tls, b"\r\n\r\n").await;
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// A client still sending a large body when tlsfront answers 413 (as a
/// browser uploading a file does: no `Expect: 100-continue`) is not reset
/// while it sends, and reads the 413. The connection cannot be reused;
/// closing it with the body's bytes unread would send a reset, which on a
/// real network destroys the answer still in flight (nginx's reason for its
/// lingering close). On loopback the answer happens to survive the reset,
/// so the reset itself is what this test sees: a write after it fails.
#[tokio::test]
async fn a_413_reaches_a_client_still_sending_its_body() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nmax_request_body_bytes = 1000\n", up.addr);
    for round in 0..3 {
        let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
        tls.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8000000\r\n\r\n")
            .await
            .unwrap();
        tls.write_all(&[b'x'; 65536]).await.unwrap();
        // The answer first: once it is here tlsfront has closed its side, and
        // from now on a write error or a reset is the close that did not keep
        // reading what the client still sends (no sleep to outlast).
        let head = read_until(&mut tls, b"\r\n\r\n").await;
        assert!(
            head.starts_with(b"HTTP/1.1 413"),
            "round {round}: {:?}",
            String::from_utf8_lossy(&head)
        );
        for i in 0..8 {
            let sent = async {
                tls.write_all(&[b'x'; 16384]).await?;
                tls.flush().await
            };
            if let Err(e) = sent.await {
                panic!("round {round}: reset while still sending (write {i}): {e}");
            }
        }
        // The end of the connection is an end of stream, not a reset.
        let mut rest = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                panic!("round {round}: the connection was reset after the 413: {e}")
            }
            Ok(_) => {}
            Err(_) => panic!("round {round}: the connection was never closed after the 413"),
        }
    }
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nheader_read_timeout = \"1s\"\n", up.addr);
    let mut slow = tls_stream(&proxy, &[b"http/1.1"]).await;
    let started = Instant::now();
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for i in 0..40 {
        if slow.write_all(format!("X-{i}: a\r\n").as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(150), slow.read(&mut buf)).await {
            // Either EOF, an error, or a 408-style answer: the server gave up on us.
            let _ = r;
            closed = true;
            break;
        }
    }
    assert!(closed, "a client trickling headers must be cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off after {:?}",
        started.elapsed()
    );
    let mut c = Client::connect(&proxy, false).await;
    let (parts, _) = c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(
        "[limits]\nidle_timeout = \"1s\"\nheader_read_timeout = \"30s\"\n",
        up.addr,
    );
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut tls, b"x-echo-body-bytes").await;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("idle connection still open after 5 s"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A slow response is not "idle": a 5 s request on a 1 s idle timeout completes.
    let mut c = Client::connect(&proxy, true).await;
    let (parts, body) = c.text(get(&proxy, "/slow", true).body(empty()).unwrap()).await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "slow\n"));
}

/// Connections waiting in the accept queue of the IPv4 listener on `port`
/// (Linux: the receive queue of a LISTEN socket in /proc/net/tcp).
fn accept_backlog(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1].ends_with(&local) && f[3] == "0A")
        .and_then(|f| {
            f[4].split_once(':')
                .map(|(_, rx)| usize::from_str_radix(rx, 16).unwrap())
        })
        .unwrap_or_else(|| panic!("no listener on port {port} in /proc/net/tcp"))
}

#[tokio::test]
async fn max_connections_makes_newcomers_wait_not_fail() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nmax_connections = 2\n", up.addr);
    let mut a = Client::connect(&proxy, false).await;
    let mut b = Client::connect(&proxy, true).await;
    assert_eq!(accept_backlog(proxy.port), 0);
    // The kernel completes a third TCP handshake; tlsfront must leave it in
    // the accept queue (README: "more wait in the kernel's backlog").
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let third = {
        let ca = proxy.ca();
        tokio::spawn(async move {
            common::connector(&ca, &[b"http/1.1"])
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .is_ok()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while accept_backlog(proxy.port) != 1 {
        assert!(
            Instant::now() < deadline,
            "the third connection never waited in the backlog"
        );
        tokio::task::yield_now().await;
    }
    for c in [&mut a, &mut b] {
        let h2 = matches!(c, Client::H2(_));
        let (parts, _) = c.text(get(&proxy, "/echo", h2).body(empty()).unwrap()).await;
        assert_eq!(parts.status, 200, "existing connections keep working");
    }
    // tlsfront served two requests meanwhile and still has not taken it.
    assert_eq!(
        accept_backlog(proxy.port),
        1,
        "a third connection was accepted while two are open"
    );
    assert!(!third.is_finished(), "a third connection must wait while two are open");
    drop(a);
    let done = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("admitted once one closes");
    assert!(done.unwrap(), "its handshake completes");
    assert_eq!(accept_backlog(proxy.port), 0);
}

#[tokio::test]
async fn reload_under_load_fails_nothing_and_swaps_certificates() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tlsfront");
    for out in ["a", "b"] {
        let ok = std::process::Command::new(bin)
            .args(["cert", "--out", &dir.path().join(out).display().to_string()])
            .output()
            .unwrap();
        assert!(ok.status.success());
    }
    // Both certificate sets chain to their own CA: trust both.
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    std::fs::copy(dir.path().join("a/cert.pem"), live.join("cert.pem")).unwrap();
    std::fs::copy(dir.path().join("a/key.pem"), live.join("key.pem")).unwrap();
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        live.join("cert.pem").display(),
        live.join("key.pem").display()
    );
    let proxy = Proxy::start(&config, up.addr);
    let mut both = std::fs::read(dir.path().join("a/ca.pem")).unwrap();
    both.extend(std::fs::read(dir.path().join("b/ca.pem")).unwrap());
    let ca = dir.path().join("both.pem");
    std::fs::write(&ca, &both).unwrap();
    // Where the helpers look for the CA to trust.
    std::fs::create_dir_all(proxy.dir.path().join("certs")).unwrap();
    std::fs::write(proxy.ca(), &both).unwrap();

    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Instant::now() + Duration::from_secs(4);
    let mut workers = Vec::new();
    // HTTP/1.1 and HTTP/2; one connection for many requests, or one each.
    for (h2, reuse) in [(false, true), (false, false), (true, true), (true, false)] {
        let (ok, failures, ca) = (ok.clone(), failures.clone(), ca.clone());
        let addr = proxy.addr();
        let port = proxy.port;
        workers.push(tokio::spawn(async move {
            let fail = |what: String| failures.lock().unwrap().push(format!("h2={h2}: {what}"));
            while Instant::now() < stop {
                let mut client = match connect_to(addr, &ca, h2).await {
                    Ok(c) => c,
                    Err(e) => {
                        fail(e);
                        continue;
                    }
                };
                for _ in 0..if reuse { 20 } else { 1 } {
                    // A whole echo ends with this line: a cut body is a failure.
                    match get_text(&mut client, port, h2).await {
                        Ok(body) if body.ends_with("x-echo-body-bytes: 0\n") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(body) => fail(format!("incomplete body: {body:?}")),
                        Err(e) => fail(e),
                    }
                }
            }
        }));
    }
    let mut hups = 0;
    while Instant::now() < stop {
        proxy.signal("HUP");
        hups += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failures during {hups} reloads: {failures:?}");
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "load was too light: {}",
        ok.load(Ordering::Relaxed)
    );
    let log = proxy.wait_for_log("reloaded configuration", Duration::from_secs(2));
    assert!(!log.contains("rejected"), "{log}");

    // Swap the certificate on disk: new handshakes get the new one.
    let b_leaf = first_cert(&dir.path().join("b/cert.pem"));
    let tmp = live.join("key.pem.new");
    std::fs::copy(dir.path().join("b/key.pem"), &tmp).unwrap();
    std::fs::rename(&tmp, live.join("key.pem")).unwrap();
    let tmp = live.join("cert.pem.new");
    std::fs::copy(dir.path().join("b/cert.pem"), &tmp).unwrap();
    std::fs::rename(&tmp, live.join("cert.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let tls = common::connector(&ca, &[b"http/1.1"])
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let served = tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec();
        if served == b_leaf {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken config is rejected with a reason; the old one keeps serving.
    std::fs::write(
        proxy.dir.path().join("tlsfront.toml"),
        "[upstream]\nurl = \"nonsense\"\n",
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log(
        "rejected, still serving the previous configuration",
        Duration::from_secs(5),
    );
    let mut c = Client::connect(&proxy, false).await;
    let (parts, _) = c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    let (_, metrics) = plain_get(proxy.admin_port(), "/metrics").await;
    assert!(metrics.contains("tlsfront_config_reload_failures_total 1"), "{metrics}");
    assert!(!metrics.contains("tlsfront_config_reloads_total 0\n"), "{metrics}");
}

/// A client over a new TLS connection trusting `ca`, or why it could not
/// connect.
async fn connect_to(addr: std::net::SocketAddr, ca: &std::path::Path, h2: bool) -> Result<Client, String> {
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = common::connector(ca, &[alpn])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(tls);
    if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Client::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Client::H1(send))
    }
}

/// GET /echo: the whole body of a 200, else what went wrong (bounded).
async fn get_text(client: &mut Client, port: u16, h2: bool) -> Result<String, String> {
    let req = if h2 {
        http::Request::get(format!("https://localhost:{port}/echo"))
    } else {
        http::Request::get("/echo").header("host", format!("localhost:{port}"))
    }
    .body(empty())
    .unwrap();
    let exchange = async {
        let resp = match client {
            Client::H1(s) => s.send_request(req).await,
            Client::H2(s) => s.send_request(req).await,
        }
        .map_err(|e| format!("request: {e}"))?;
        if resp.status() != 200 {
            return Err(format!("status {}", resp.status()));
        }
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no whole answer within 10 s".into()))
}

fn first_cert(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn access_log_json_lines_are_valid_json() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[log]\naccess = \"json\"\n", up.addr);
    for h2 in [false, true] {
        let mut c = Client::connect(&proxy, h2).await;
        let (parts, _) = c.text(get(&proxy, "/echo/a?b=c", h2).body(empty()).unwrap()).await;
        assert_eq!(parts.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.stdout().lines().count() < 2 {
        assert!(Instant::now() < deadline, "no access log lines: {}", proxy.stdout());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<serde_json::Value> = proxy
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect();
    for (line, proto) in lines.iter().zip(["HTTP/1.1", "HTTP/2.0"]) {
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/echo/a?b=c");
        assert_eq!(line["status"], 200);
        assert_eq!(line["client_ip"], "127.0.0.1");
        assert_eq!(line["protocol"], proto);
        assert_eq!(line["tls"], "TLSv1.3");
        assert!(line["host"].as_str().unwrap().starts_with("localhost"));
        assert!(line["bytes"].as_u64().unwrap() > 50);
        assert!(line["upstream_ms"].as_f64().is_some() && line["total_ms"].as_f64().is_some());
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn access_log_common_format() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    c.text(get(&proxy, "/echo/x", false).body(empty()).unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.stdout().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = proxy.stdout();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("\"GET /echo/x HTTP/1.1\" 200 "), "{line}");
    assert!(line.contains("tls=TLSv1.3"), "{line}");
}

/// An idle kept-alive HTTP/1.1 connection gives hyper's buffers back
/// (parked, after 0.5 s) and is served as before by its next request: three
/// times on one TLS connection. (Idle deadlines, shutdown, uploads and
/// WebSocket upgrades on parked connections are in their own tests.)
#[tokio::test]
async fn an_idle_keep_alive_connection_is_parked_and_served_again() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", up.addr);
    let admin = proxy.admin_port();
    let mut c = Client::connect(&proxy, false).await;
    for round in 0..3 {
        let (parts, body) = c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
        assert_eq!(parts.status, 200, "round {round}: {body}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, metrics) = plain_get(admin, "/metrics").await;
            if metrics.contains("tlsfront_parked_connections 1") {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: never parked:\n{metrics}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (parts, _) = c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    let (_, metrics) = plain_get(admin, "/metrics").await;
    for needle in [
        "tlsfront_tls_handshakes_total 1",
        "tlsfront_parked_connections 0",
        "tlsfront_requests_total{class=\"2xx\"} 4",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
}

/// Waits until `/metrics` reads `tlsfront_parked_connections {n}`.
async fn wait_for_parked(admin: u16, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = plain_get(admin, "/metrics").await;
        if metrics.contains(&format!("tlsfront_parked_connections {n}\n")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: parked connections never read {n}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parking never cuts a request in two: a head that stops halfway for
/// longer than the parking delay (a lost segment's retransmission, a slow
/// link) on a kept-alive (and parked) connection is still read to its end
/// and answered, and the connection is not parked in the middle of it.
#[tokio::test]
async fn a_request_head_that_pauses_halfway_is_not_cut_by_parking() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", up.addr);
    let admin = proxy.admin_port();
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut tls, b"\r\n\r\n").await;
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    // Parked, then half a head, a pause past the parking delay (0.5 s)
    // during which it must stay unparked, and the rest.
    wait_for_parked(admin, 1, "before the half head").await;
    tls.write_all(b"GET /echo/second HTTP/1.1\r\nHo").await.unwrap();
    tls.flush().await.unwrap();
    wait_for_parked(admin, 0, "woken by the half head").await;
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_millis(1500) {
        let (_, metrics) = plain_get(admin, "/metrics").await;
        assert!(
            metrics.contains("tlsfront_parked_connections 0\n"),
            "parked in the middle of a request head:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tls.write_all(b"st: localhost\r\n\r\n").await.unwrap();
    let second = read_until(&mut tls, b"/echo/second").await;
    assert!(
        String::from_utf8_lossy(&second).contains("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&second)
    );
}

/// Neither parking nor the keep-alive deadline ends a response still on its
/// way: a client that stops reading a download for longer than the parking
/// delay, or than the keep-alive wait (`header_read_timeout` 1 s and the
/// second tlsfront gives a closing connection), after the whole body was
/// handed to hyper but before hyper and rustls could send it (their buffers
/// are not the kernel's), gets all of it; with the default keep-alive, then
/// its next answer on the same connection.
#[tokio::test]
async fn a_slow_reader_gets_its_whole_download_across_the_parking_delay() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    slow_readers(&proxy, Duration::from_millis(1500), true).await;
    let short_keep_alive = Proxy::start("[limits]\nheader_read_timeout = \"1s\"\n", up.addr);
    slow_readers(&short_keep_alive, Duration::from_millis(2500), false).await;
}

/// 32 clients at once, each asking for a download of its own size, reading
/// nothing for `pause`, then all of it. The client's small receive buffer
/// and segment size keep the kernel's share small (on loopback, segments of
/// 64 KiB let the sender's buffer grow to megabytes), and the sizes step
/// through it, so that for several of them the tail waits in tlsfront's.
async fn slow_readers(proxy: &Proxy, pause: Duration, then_next: bool) {
    use std::os::fd::AsRawFd;
    let clients = (1..=32u64).map(|step| {
        let (addr, ca) = (proxy.addr(), proxy.ca());
        tokio::spawn(async move {
            let size = step * 32 * 1024;
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mss: libc::c_int = 1024;
            // SAFETY: setsockopt on a socket this test owns, with a pointer
            // to an int that outlives the call and its exact size.
            let set = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_MAXSEG,
                    (&mss as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
            let tcp = socket.connect(addr).await.unwrap();
            let mut tls = common::connector(&ca, &[b"http/1.1"])
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let ask = format!("GET /download?bytes={size} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            tls.write_all(ask.as_bytes()).await.unwrap();
            tls.flush().await.unwrap();
            tokio::time::sleep(pause).await;
            let mut got = read_until(&mut tls, b"\r\n\r\n").await;
            let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "{size}: {:?}",
                String::from_utf8_lossy(&got[..head_end])
            );
            let mut chunk = vec![0u8; 64 * 1024];
            while (got.len() - head_end) < size as usize {
                match tokio::time::timeout(Duration::from_secs(3), tls.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
                    other => panic!("{size}: body stopped at {} bytes: {other:?}", got.len() - head_end),
                }
            }
            assert_eq!(got.len() - head_end, size as usize, "{size}: more than the body");
            if then_next {
                tls.write_all(b"GET /echo/next HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .unwrap();
                let next = tokio::time::timeout(Duration::from_secs(3), read_until(&mut tls, b"/echo/next"))
                    .await
                    .unwrap_or_else(|_| panic!("{size}: no answer to the next request"));
                assert!(
                    next.starts_with(b"HTTP/1.1 200"),
                    "{size}: {:?}",
                    String::from_utf8_lossy(&next)
                );
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.unwrap();
    }
}

/// `limits.send_timeout`: a client that stops reading a response is
/// dropped once it has taken no bytes for that long, instead of holding
/// its connection (and the app's worker streaming to it) for ever.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nsend_timeout = \"1s\"\n", up.addr);
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    let size = 256u64 * 1024 * 1024;
    let ask = format!("GET /download?bytes={size} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tls.write_all(ask.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    // What the kernel still holds, then the end: well short of the body.
    let started = Instant::now();
    let mut got = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk)).await {
            Ok(Ok(0)) => break "end of stream",
            Ok(Ok(n)) => got += n as u64,
            Ok(Err(_)) => break "reset",
            Err(_) => panic!(
                "still open {:?} after reading resumed, {got} bytes in",
                started.elapsed()
            ),
        }
    };
    assert!(got < size / 2, "{ended} after {got} of {size} bytes: not dropped");
}

/// `upstream.read_timeout`: an app that stops in the middle of a response
/// body does not hold the client for ever; the client sees the response
/// end early (HTTP/1.1: the connection closes short of Content-Length;
/// HTTP/2: the stream is reset), soon after the timeout.
#[tokio::test]
async fn an_app_silent_mid_body_is_cut_off_after_read_timeout() {
    let up = RawUpstream::start(Behaviour::StallsMidBody).await;
    let proxy = Proxy::start("[upstream]\nread_timeout = \"1s\"\n", up.addr);
    for h2 in [false, true] {
        let mut c = Client::connect(&proxy, h2).await;
        let started = Instant::now();
        let response = c.send(get(&proxy, "/", h2).body(empty()).unwrap()).await;
        assert_eq!(response.status(), 200);
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            http_body_util::BodyExt::collect(response.into_body()),
        )
        .await
        .unwrap_or_else(|_| panic!("h2={h2}: body still open after 10 s"));
        assert!(body.is_err(), "h2={h2}: the body ended as if complete");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "h2={h2}: cut after {took:?}");
    }
}

/// Parking never takes the rest of a body for a new request: an app that
/// answers an upload before reading it, then a pause past the parking
/// delay, and a body whose bytes so far end with a blank line and whose
/// rest looks like a request. The rest is the body's (the app gets it as
/// such); it is never forwarded, nor answered, as a request of its own.
#[tokio::test]
async fn the_rest_of_a_body_after_a_pause_is_never_taken_for_a_request() {
    let up = RawUpstream::start(Behaviour::AnswersBeforeBody).await;
    let proxy = Proxy::start("", up.addr);
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    let rest = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let first = b"hello\r\n\r\n";
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        first.len() + rest.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    let answer = read_until(&mut tls, b"early\n").await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    // Whatever comes back within a second (nothing, or an end of stream).
    let mut after = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), tls.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        after.extend_from_slice(&chunk[..n]);
    }
    assert!(
        !after.starts_with(b"HTTP/1.1"),
        "answered as a request: {}",
        String::from_utf8_lossy(&after)
    );
    let seen = up.received.lock().unwrap().clone();
    for (i, connection) in seen.iter().enumerate() {
        assert!(
            !connection.starts_with(b"GET /smuggled"),
            "upstream connection {i} got the body's rest as a request: {}",
            String::from_utf8_lossy(connection)
        );
    }
    let all = up.all_text();
    assert!(
        all.contains("hello\r\n\r\nGET /smuggled"),
        "the body did not reach the app whole: {all:?}"
    );
}

/// A new HTTP/1.1 connection that has had one request answered (200).
async fn kept_alive_after_one_request(proxy: &Proxy) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = tls_stream(proxy, &[b"http/1.1"]).await;
    tls.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut tls, b"/echo").await;
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    tls
}

/// An idle HTTP/1.1 keep-alive connection lives for `idle_timeout` (60 s
/// by default), not `header_read_timeout`: after 20 s of idleness (parked)
/// the next request is served on the same TLS session, no new handshake.
#[tokio::test]
async fn an_idle_keep_alive_connection_lives_for_idle_timeout() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", up.addr);
    let admin = proxy.admin_port();
    let mut c = Client::connect(&proxy, false).await;
    let (parts, _) = c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    wait_for_parked(admin, 1, "idle").await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (parts, body) = c.text(get(&proxy, "/echo/again", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200, "{body}");
    let (_, metrics) = plain_get(admin, "/metrics").await;
    assert!(
        metrics.contains("tlsfront_tls_handshakes_total 1\n"),
        "a new handshake:\n{metrics}"
    );
}

/// `idle_timeout` closes an idle HTTP/1.1 connection, parked or not, that
/// long after its last response (3 s here; header_read_timeout is 10 s).
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_idle_timeout() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[limits]\nidle_timeout = \"3s\"\n", up.addr);
    let mut tls = kept_alive_after_one_request(&proxy).await;
    let answered = Instant::now();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(15), tls.read(&mut buf)).await;
    let after = answered.elapsed();
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(
        after >= Duration::from_millis(2800) && after < Duration::from_millis(5000),
        "closed {after:?} after the last response, idle_timeout is 3 s"
    );
}

/// A request head that starts after an idle pause is bounded by
/// `header_read_timeout` from its first byte (slowloris on a kept-alive,
/// parked connection), not by `idle_timeout` and not from the last response.
#[tokio::test]
async fn a_head_after_an_idle_pause_is_bounded_from_its_first_byte() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(
        "[limits]\nheader_read_timeout = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        up.addr,
    );
    let admin = proxy.admin_port();
    let mut tls = kept_alive_after_one_request(&proxy).await;
    wait_for_parked(admin, 1, "idle").await;
    // Idle for longer than header_read_timeout: still open.
    tokio::time::sleep(Duration::from_secs(5)).await;
    tls.write_all(b"GET /echo/slow HTTP/1.1\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let head_started = Instant::now();
    let mut closed_after = None;
    for i in 0..40 {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(250), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(head_started.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("an answer to half a head: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        if tls.write_all(format!("X-{i}: a\r\n").as_bytes()).await.is_err() {
            closed_after = Some(head_started.elapsed());
            break;
        }
        let _ = tls.flush().await;
    }
    let after = closed_after.expect("a trickled head must be cut off");
    assert!(
        after >= Duration::from_millis(1800) && after < Duration::from_millis(3000),
        "closed {after:?} after the head's first byte, header_read_timeout is 2 s"
    );
}

#[tokio::test]
async fn admin_health_readiness_and_metrics() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", up.addr);
    let admin = proxy.admin_port();
    assert_eq!(plain_get(admin, "/healthz").await.0, 200);
    assert_eq!(plain_get(admin, "/readyz").await.0, 200);
    let mut c = Client::connect(&proxy, false).await;
    for _ in 0..3 {
        c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    }
    let (status, metrics) = plain_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "tlsfront_requests_total{class=\"2xx\"} 3",
        "tlsfront_open_connections 1",
        "tlsfront_tls_handshakes_total 1",
        "tlsfront_request_duration_seconds_count 3",
        "tlsfront_upstream_response_duration_seconds_count 3",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    assert_eq!(plain_get(admin, "/nope").await.0, 404);

    // The app is down: not ready, still healthy; 502s and connect errors counted.
    let refusing = RefusingAddr::new();
    let dead = refusing.addr;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", dead);
    let admin = proxy.admin_port();
    assert_eq!(plain_get(admin, "/healthz").await.0, 200);
    assert_eq!(plain_get(admin, "/readyz").await.0, 503);
    let mut c = Client::connect(&proxy, true).await;
    let (parts, _) = c.text(get(&proxy, "/", true).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 502);
    let (_, metrics) = plain_get(admin, "/metrics").await;
    assert!(
        metrics.contains("tlsfront_upstream_errors_total{kind=\"connect\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tlsfront_requests_total{class=\"5xx\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn security_headers_are_applied() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(
        "[headers]\nhsts = \"max-age=63072000; includeSubDomains\"\nremove_response = [\"X-Public\"]\n\
         set_response = { \"X-Frame-Options\" = \"DENY\" }\nset_request = { \"X-From-Proxy\" = \"tlsfront\" }\n",
        up.addr,
    );
    let mut c = Client::connect(&proxy, true).await;
    let (parts, body) = c
        .text(
            get(&proxy, "/echo", true)
                .header("x-from-proxy", "forged")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        parts.headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(parts.headers["x-frame-options"], "DENY");
    assert!(parts.headers.get("via").is_none());
    assert_eq!(echoed(&echoed_headers(&body), "x-from-proxy"), vec!["tlsfront"]);
    let (parts, _) = c.text(get(&proxy, "/hop", true).body(empty()).unwrap()).await;
    assert!(parts.headers.get("x-public").is_none());
    // tlsfront's own error pages get them too.
    let (parts, body) = c
        .text(
            get(&proxy, "/", true)
                .header("host", "a")
                .method("CONNECT")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(parts.status, 405, "{body}");
    assert!(body.contains("CONNECT is not supported"), "tlsfront's own page: {body}");
    assert_eq!(
        parts.headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(parts.headers["x-frame-options"], "DENY");
}

#[tokio::test]
async fn live_hints_are_logged_once_then_counted() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    for _ in 0..3 {
        c.text(get(&proxy, "/cookies", false).body(empty()).unwrap()).await;
        c.text(get(&proxy, "/redirect", false).body(empty()).unwrap()).await;
    }
    let log = proxy.wait_for_log("SESSION_COOKIE_SECURE", Duration::from_secs(2));
    assert_eq!(log.matches("Set-Cookie without Secure").count(), 1, "{log}");
    assert_eq!(log.matches("redirects to its own internal address").count(), 1, "{log}");
    let (_, metrics) = plain_get(proxy.admin_port(), "/metrics").await;
    assert!(
        metrics.contains("tlsfront_hints_total{kind=\"cookie_without_secure\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tlsfront_hints_total{kind=\"redirect_to_upstream\"} 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn stalled_tls_handshakes_are_dropped() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(
        "[limits]\nhandshake_timeout = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        up.addr,
    );
    let mut stalled = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // The first bytes of a ClientHello record, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "stalled handshake must be closed: {r:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let (_, metrics) = plain_get(proxy.admin_port(), "/metrics").await;
    assert!(metrics.contains("tlsfront_tls_handshake_failures_total 1"), "{metrics}");
}

#[tokio::test]
async fn application_log_can_be_json() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[log]\nformat = \"json\"\n", up.addr);
    let log = proxy.wait_for_log("listening on", Duration::from_secs(5));
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn health_subcommand_reflects_the_admin_endpoint() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", up.addr);
    let url = format!("http://127.0.0.1:{}/healthz", proxy.admin_port());
    let bin = env!("CARGO_BIN_EXE_tlsfront");
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(bin)
            .args(&args)
            .env_remove("TLSFRONT_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(vec!["health".into(), "--url".into(), url.clone()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("healthy"), "{text}");
    // Through the config file's admin.listen (0.0.0.0 is asked on loopback).
    let cfg = proxy.dir.path().join("health.toml");
    std::fs::write(&cfg, format!("[admin]\nlisten = \"0.0.0.0:{}\"\n", proxy.admin_port())).unwrap();
    let (code, text) = run(vec!["health".into(), "-c".into(), cfg.display().to_string()]);
    assert_eq!(code, Some(0), "{text}");
    // No admin endpoint configured: a config error.
    std::fs::write(&cfg, "").unwrap();
    let (code, text) = run(vec!["health".into(), "-c".into(), cfg.display().to_string()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("admin.listen"), "{text}");
    // Shutting down: /healthz says 503 while an open WebSocket keeps the
    // process draining (exit 1, the answer shown); once it has exited nothing
    // answers (exit 3).
    let mut tunnel = tls_stream(&proxy, &[b"http/1.1"]).await;
    tunnel.write_all(WS_REQUEST).await.unwrap();
    let head = read_until(&mut tunnel, b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    proxy.signal("TERM");
    proxy.wait_for_log("shutting down", Duration::from_secs(5));
    let (code, text) = run(vec!["health".into(), "--url".into(), url.clone()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("unhealthy") && text.contains("503"), "{text}");
    assert!(text.contains("shutting down"), "{text}");
    drop(tunnel);
    let status = tokio::task::spawn_blocking(move || proxy.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let (code, text) = run(vec!["health".into(), "--url".into(), url.clone()]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("unreachable") && text.contains("cannot connect"),
        "{text}"
    );
}

#[tokio::test]
async fn reload_says_what_needs_a_restart() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    std::fs::write(
        proxy.dir.path().join("tlsfront.toml"),
        "[limits]\nmax_connections = 5\n[log]\naccess = \"json\"\n[cookies]\nsame_site = \"lax\"\n",
    )
    .unwrap();
    proxy.signal("HUP");
    let log = proxy.wait_for_log("reloaded configuration", Duration::from_secs(5));
    assert!(
        log.contains("limits.max_connections changed: that takes effect on restart"),
        "{log}"
    );
    assert!(log.contains("[log] settings changed"), "{log}");
    // Everything else did change: the new cookie policy applies to the next request.
    let mut c = Client::connect(&proxy, false).await;
    let (parts, _) = c.text(get(&proxy, "/cookies", false).body(empty()).unwrap()).await;
    let first = parts
        .headers
        .get_all("set-cookie")
        .iter()
        .next()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(first, "session=abc123; Path=/; Secure; HttpOnly; SameSite=Lax");
}

/// `limits.shutdown_delay`: after SIGTERM, /readyz and /healthz answer 503
/// at once while tlsfront keeps accepting and serving: a new connection 1 s
/// after SIGTERM (delay 2 s) gets its 200. Then it stops accepting, drains
/// and exits 0, and the log tells each step with counts.
#[tokio::test]
async fn shutdown_delay_keeps_serving_while_readyz_says_503() {
    let up = Upstream::start().await;
    let mut proxy = Proxy::start(
        "[limits]\nshutdown_delay = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        up.addr,
    );
    let admin = proxy.admin_port();
    assert_eq!(plain_get(admin, "/readyz").await.0, 200);
    // Kept-alive connections from before: told to come back on new ones.
    let mut kept = Client::connect(&proxy, false).await;
    let mut kept_h2 = Client::connect(&proxy, true).await;
    for (c, h2) in [(&mut kept, false), (&mut kept_h2, true)] {
        let (parts, _) = c.text(get(&proxy, "/echo", h2).body(empty()).unwrap()).await;
        assert_eq!(parts.status, 200);
        assert!(parts.headers.get("connection").is_none(), "{:?}", parts.headers);
    }
    proxy.signal("TERM");
    let signalled = Instant::now();
    proxy.wait_for_log("still accepting and serving", Duration::from_secs(5));
    let (parts, _) = kept.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        parts.headers["connection"], "close",
        "HTTP/1.1 in the delay: {:?}",
        parts.headers
    );
    let Client::H2(h2) = &kept_h2 else { unreachable!() };
    let goaway = Instant::now();
    while !h2.is_closed() {
        assert!(
            goaway.elapsed() < Duration::from_secs(5),
            "no GOAWAY on the HTTP/2 connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(plain_get(admin, "/readyz").await.0, 503);
    let (status, body) = plain_get(admin, "/healthz").await;
    assert_eq!((status, body.as_str()), (503, "shutting down\n"));
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(signalled.elapsed())).await;
    let mut c = Client::connect(&proxy, false).await;
    let (parts, body) = c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200, "a request 1 s after SIGTERM: {body}");
    drop(c);
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.wait_for_exit(Duration::from_secs(15));
        (status, proxy.log())
    })
    .await
    .unwrap();
    let (status, log) = status;
    assert!(status.success(), "{status:?}\n{log}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "exited {took:?} after SIGTERM, before shutdown_delay"
    );
    for step in [
        "still accepting and serving for limits.shutdown_delay = 2s",
        "shutting down: no new connections",
        "drained: every connection closed",
    ] {
        assert!(log.contains(step), "{step} not logged:\n{log}");
    }
}

/// A second SIGTERM ends the shutdown delay at once.
#[tokio::test]
async fn a_second_signal_skips_the_shutdown_delay() {
    let up = Upstream::start().await;
    let mut proxy = Proxy::start("[limits]\nshutdown_delay = \"60s\"\n", up.addr);
    proxy.signal("TERM");
    proxy.wait_for_log("still accepting and serving", Duration::from_secs(5));
    let second = Instant::now();
    proxy.signal("INT");
    let (status, log) = tokio::task::spawn_blocking(move || {
        let status = proxy.wait_for_exit(Duration::from_secs(20));
        (status, proxy.log())
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(second.elapsed() < Duration::from_secs(10), "{:?}", second.elapsed());
    assert!(log.contains("the rest of shutdown_delay skipped"), "{log}");
}

/// A connection accepted before the listener closed, whose first request
/// arrives just after the drain began, is served, then closed (HTTP/1.1 and
/// HTTP/2); before the fix it was closed idle and the request got nothing.
#[tokio::test]
async fn a_request_already_on_its_way_at_shutdown_is_served() {
    let up = Upstream::start().await;
    let mut proxy = Proxy::start("", up.addr);
    let mut h1 = tls_stream(&proxy, &[b"http/1.1"]).await;
    let mut h2 = Client::connect(&proxy, true).await;
    proxy.signal("TERM");
    proxy.wait_for_log("shutting down: no new connections", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    h1.write_all(b"GET /echo/late HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), h1.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "HTTP/1.1: {answer:?}");
    assert!(answer.contains("/echo/late"), "{answer}");
    let (parts, body) = h2.text(get(&proxy, "/echo/late2", true).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200, "HTTP/2: {body}");
    drop(h2);
    let status = tokio::task::spawn_blocking(move || proxy.wait_for_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
