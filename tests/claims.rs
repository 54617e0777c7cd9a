//! README claims, each shown from outside with the real binary, real sockets
//! and real TLS clients: `Expect` answered and not forwarded, certificate
//! renewal by a `..data` symlink swap, the metrics that are hard to reach,
//! HTTP/2 `max_concurrent_streams`, a `shutdown_timeout` that runs out, the
//! reload warning for settings that need a restart, TLS versions (with
//! `openssl s_client`), and uploads that stream.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2raw::{frame, literal, PREFACE};
use common::raw_upstream::{Behaviour, RawUpstream};
use common::upstream::Upstream;
use common::{echoed, echoed_headers, get, plain_get, read_until, tls_stream, Client, Proxy};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Every wait on an event is bounded by this.
const WITHIN: Duration = Duration::from_secs(10);

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// What the probe upstream saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A request head arrived (path and query).
    Request(String),
    /// The first body bytes of an `/upload-probe` request arrived (how many).
    BodyStarted(usize),
}

/// An upstream that reports what it sees as it sees it: `/upload-probe`
/// reports its first body bytes, then answers with the total; `/ws` echoes
/// after a 101; anything else is held unanswered for as long as the
/// connection lives (an app that is stuck).
struct ProbeUpstream {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl ProbeUpstream {
    async fn start() -> ProbeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| probe(req, tx.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        ProbeUpstream { addr, seen }
    }

    /// The next thing the upstream saw, waiting at most `WITHIN`.
    async fn next(&mut self) -> Seen {
        match tokio::time::timeout(WITHIN, self.seen.recv()).await {
            Ok(Some(seen)) => seen,
            Ok(None) => panic!("the probe upstream stopped"),
            Err(_) => panic!("the upstream saw nothing more within {WITHIN:?}"),
        }
    }
}

async fn probe(req: Request<Incoming>, tx: mpsc::UnboundedSender<Seen>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let _ = tx.send(Seen::Request(path.clone()));
    if path.starts_with("/upload-probe") {
        let mut body = req.into_body();
        let (mut total, mut first) = (0usize, true);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Ok(Response::builder().status(400).body(empty()).unwrap());
            };
            if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                if first {
                    first = false;
                    let _ = tx.send(Seen::BodyStarted(data.len()));
                }
                total += data.len();
            }
        }
        return Ok(Response::new(Full::new(Bytes::from(format!("{total}\n")))));
    }
    if path == "/ws" {
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            if let Ok(io) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .body(empty())
            .unwrap());
    }
    std::future::pending().await
}

const WS_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Opens a WebSocket tunnel through the proxy and checks one echo round trip.
async fn open_tunnel(proxy: &Proxy, message: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = tls_stream(proxy, &[b"http/1.1"]).await;
    tls.write_all(WS_REQUEST).await.unwrap();
    let head = read_until(&mut tls, b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tls.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(WITHIN, tls.read_exact(&mut back))
        .await
        .expect("echo within the bound")
        .unwrap();
    assert_eq!(back, message);
    tls
}

/// Reads a TLS stream to its end (bounded); what came.
async fn read_to_end<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WITHIN, s.read_to_end(&mut out))
        .await
        .expect("the server closed within the bound");
    String::from_utf8_lossy(&out).into_owned()
}

/// The `/metrics` text of the admin endpoint.
async fn metrics(admin: u16) -> String {
    let (status, text) = plain_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    text
}

/// The value of one series (`name` or `name{labels}`) in an exposition.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `/metrics` (bounded) until `series` has `value`.
async fn wait_for_metric(admin: u16, series: &str, value: f64) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let text = metrics(admin).await;
        if metric(&text, series) == Some(value) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value} within {WITHIN:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- Expect

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_by_tlsfront_and_not_forwarded() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);

    // HTTP/1.1: the client holds its body back until it hears 100 Continue.
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut tls, b"\r\n\r\n").await;
    assert_eq!(
        String::from_utf8_lossy(&interim),
        "HTTP/1.1 100 Continue\r\n\r\n",
        "tlsfront must answer Expect before the body is sent"
    );
    tls.write_all(b"hello world").await.unwrap();
    let response = read_to_end(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let headers = echoed_headers(body);
    assert!(echoed(&headers, "expect").is_empty(), "Expect reached the app:\n{body}");
    assert_eq!(echoed(&headers, "x-echo-body-bytes"), vec!["11"], "{body}");

    // HTTP/2: the header is not forwarded either.
    let mut c = Client::connect(&proxy, true).await;
    let (parts, body) = c
        .text(
            Request::post(format!("https://localhost:{}/echo", proxy.port))
                .header("expect", "100-continue")
                .body(Full::new(Bytes::from_static(b"hello world")))
                .unwrap(),
        )
        .await;
    assert_eq!(parts.status, 200);
    let headers = echoed_headers(&body);
    assert!(echoed(&headers, "expect").is_empty(), "Expect reached the app:\n{body}");
    assert_eq!(echoed(&headers, "x-echo-body-bytes"), vec!["11"], "{body}");
}

// ------------------------------------------------- certificate renewal

/// Writes a development CA and a leaf signed by it into `dir`.
fn dev_cert_set(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .args(["cert", "--out", &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A Kubernetes-style secret volume: `tls.crt` and `tls.key` are links
/// through `..data`, a link to a versioned directory that is swapped whole.
struct SecretVolume {
    root: PathBuf,
    current: Option<String>,
}

impl SecretVolume {
    fn new(root: PathBuf) -> SecretVolume {
        std::fs::create_dir(&root).unwrap();
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        SecretVolume { root, current: None }
    }

    /// Publishes a new version the way the kubelet does: write a new
    /// directory, point a fresh link at it, rename that over `..data`
    /// (atomic), then remove the old directory.
    fn publish(&mut self, version: &str, cert: &[u8], key: &[u8]) {
        let dir = self.root.join(version);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        if let Some(old) = self.current.replace(version.to_string()) {
            std::fs::remove_dir_all(self.root.join(old)).unwrap();
        }
    }
}

/// The leaf certificate the proxy serves to a new connection.
async fn served_leaf(proxy: &Proxy, trust: &Path) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let tls = common::connector(trust, &[b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake failed: {e}; log:\n{}", proxy.log()));
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn first_cert(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_renewal_by_directory_symlink_swap_and_half_written_pairs() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut trust = Vec::new();
    for set in ["a", "b", "c"] {
        dev_cert_set(&dir.path().join(set));
        trust.extend(std::fs::read(dir.path().join(set).join("ca.pem")).unwrap());
    }
    let trust_file = dir.path().join("trust.pem");
    std::fs::write(&trust_file, &trust).unwrap();
    let read = |set: &str, file: &str| std::fs::read(dir.path().join(set).join(file)).unwrap();
    let leaf = |set: &str| first_cert(&dir.path().join(set).join("cert.pem"));

    let mut secret = SecretVolume::new(dir.path().join("secret"));
    secret.publish("..2026_01", &read("a", "cert.pem"), &read("a", "key.pem"));
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        secret.root.join("tls.crt").display(),
        secret.root.join("tls.key").display()
    );
    let proxy = Proxy::start(&config, up.addr);
    // Where the helpers look for the CA to trust.
    std::fs::create_dir_all(proxy.dir.path().join("certs")).unwrap();
    std::fs::write(proxy.ca(), &trust).unwrap();
    assert!(served_leaf(&proxy, &trust_file).await == leaf("a"));

    let reloaded = "reloaded configuration and certificates (certificate or key file changed)";
    let rejected = "reload (certificate or key file changed) rejected, still serving the previous configuration";

    // A renewal: the ..data swap is noticed and new handshakes get the new pair.
    secret.publish("..2026_02", &read("b", "cert.pem"), &read("b", "key.pem"));
    proxy.wait_for_log_count(reloaded, 1, WITHIN);
    assert!(
        served_leaf(&proxy, &trust_file).await == leaf("b"),
        "renewal not served"
    );

    // Half-written pairs are rejected and the previous pair keeps serving:
    // a new certificate with the old key, then a truncated certificate.
    secret.publish("..2026_03", &read("c", "cert.pem"), &read("a", "key.pem"));
    let log = proxy.wait_for_log_count(rejected, 1, WITHIN);
    assert!(log.contains("cannot be used with the certificate"), "{log}");
    assert!(
        served_leaf(&proxy, &trust_file).await == leaf("b"),
        "mismatched pair served"
    );
    let cert_c = read("c", "cert.pem");
    secret.publish("..2026_04", &cert_c[..cert_c.len() / 2], &read("c", "key.pem"));
    let log = proxy.wait_for_log_count(rejected, 2, WITHIN);
    assert!(log.contains("is not a valid PEM certificate chain"), "{log}");
    assert!(
        served_leaf(&proxy, &trust_file).await == leaf("b"),
        "truncated pair served"
    );

    // The next change, complete this time, is picked up.
    secret.publish("..2026_05", &cert_c, &read("c", "key.pem"));
    proxy.wait_for_log_count(reloaded, 2, WITHIN);
    assert!(
        served_leaf(&proxy, &trust_file).await == leaf("c"),
        "completed pair not served"
    );
    let mut c = Client::connect(&proxy, true).await;
    let (parts, _) = c.text(get(&proxy, "/echo", true).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
}

// ------------------------------------------------------------- metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_tunnels_and_body_bytes() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", up.addr);
    let admin = proxy.admin_port();
    let before = metrics(admin).await;
    for series in [
        "tlsfront_open_tunnels",
        "tlsfront_received_bytes_total",
        "tlsfront_sent_bytes_total",
    ] {
        assert_eq!(metric(&before, series), Some(0.0), "{series}:\n{before}");
    }

    // Request and response bodies, over HTTP/2 and HTTP/1.1.
    let mut c = Client::connect(&proxy, true).await;
    let (parts, body) = c
        .text(
            Request::post(format!("https://localhost:{}/upload", proxy.port))
                .body(Full::new(Bytes::from(vec![b'u'; 12_345])))
                .unwrap(),
        )
        .await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "12345\n"));
    let mut c = Client::connect(&proxy, false).await;
    let (parts, body) = c
        .text(get(&proxy, "/download?bytes=54321", false).body(empty()).unwrap())
        .await;
    assert_eq!((parts.status.as_u16(), body.len()), (200, 54_321));
    let text = metrics(admin).await;
    assert_eq!(metric(&text, "tlsfront_received_bytes_total"), Some(12_345.0), "{text}");
    assert_eq!(
        metric(&text, "tlsfront_sent_bytes_total"),
        Some((6 + 54_321) as f64),
        "{text}"
    );

    // A WebSocket tunnel: counted open while it is, its bytes when it closes.
    let mut tunnel = open_tunnel(&proxy, &[b'w'; 1000]).await;
    let text = metrics(admin).await;
    assert_eq!(metric(&text, "tlsfront_open_tunnels"), Some(1.0), "{text}");
    tunnel.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut tunnel).await, "");
    let text = wait_for_metric(admin, "tlsfront_open_tunnels", 0.0).await;
    assert_eq!(
        metric(&text, "tlsfront_received_bytes_total"),
        Some((12_345 + 1000) as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tlsfront_sent_bytes_total"),
        Some((6 + 54_321 + 1000) as f64),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_rejections_count_413_and_431() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(
        "[limits]\nmax_request_header_bytes = 16384\nmax_request_body_bytes = 1000\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        up.addr,
    );
    let admin = proxy.admin_port();
    let header_series = "tlsfront_limit_rejections_total{limit=\"header_bytes\"}";
    let body_series = "tlsfront_limit_rejections_total{limit=\"body_bytes\"}";
    let text = metrics(admin).await;
    assert_eq!(metric(&text, header_series), None, "{text}");
    assert_eq!(metric(&text, body_series), None, "{text}");

    // 431: just over the limit (tlsfront's own check), over HTTP/1.1 and HTTP/2.
    for (h2, count) in [(false, 1.0), (true, 2.0)] {
        let mut c = Client::connect(&proxy, h2).await;
        let resp = c
            .send(
                get(&proxy, "/echo", h2)
                    .header("x-big", "a".repeat(17_000))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status(), 431, "h2={h2}");
        wait_for_metric(admin, header_series, count).await;
    }
    // Far over it on HTTP/1.1, where hyper's read buffer stops the head and
    // hyper answers. It closes while the client may still be writing, so the
    // client sees the 431 or a reset; either way the connection ends and the
    // refusal is counted.
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    let head = format!(
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = tls.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WITHIN, tls.read_to_end(&mut answer))
        .await
        .expect("the connection ends within the bound");
    assert!(
        answer.starts_with(b"HTTP/1.1 431") || (answer.is_empty() && read.is_err()),
        "{read:?} {}",
        String::from_utf8_lossy(&answer)
    );
    wait_for_metric(admin, header_series, 3.0).await;

    // 413: announced by Content-Length (the client waits for 100 Continue,
    // as curl does for large bodies), then found while streaming (chunked).
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut tls, b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&head));
    let text = metrics(admin).await;
    assert_eq!(metric(&text, body_series), Some(1.0), "{text}");
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        tls.write_all(b"258\r\n").await.unwrap();
        tls.write_all(&[b'y'; 600]).await.unwrap();
        tls.write_all(b"\r\n").await.unwrap();
    }
    tls.write_all(b"0\r\n\r\n").await.unwrap();
    let head = read_until(&mut tls, b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&head));
    let text = metrics(admin).await;
    assert_eq!(metric(&text, body_series), Some(2.0), "{text}");
    assert_eq!(metric(&text, header_series), Some(3.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_counted_by_kind() {
    let kinds = |text: &str| {
        ["connect", "timeout", "protocol"]
            .map(|k| metric(text, &format!("tlsfront_upstream_errors_total{{kind=\"{k}\"}}")).unwrap_or(-1.0))
    };

    // An app that never answers: 504, counted as a timeout.
    let mut stuck = ProbeUpstream::start().await;
    let proxy = Proxy::start(
        "[upstream]\nresponse_timeout = \"500ms\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        stuck.addr,
    );
    let mut c = Client::connect(&proxy, false).await;
    let (parts, _) = c.text(get(&proxy, "/hold/1", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 504);
    assert_eq!(stuck.next().await, Seen::Request("/hold/1".into()));
    let text = metrics(proxy.admin_port()).await;
    assert_eq!(kinds(&text), [0.0, 1.0, 0.0], "connect, timeout, protocol:\n{text}");

    // An app that answers with something that is not HTTP: 502, a protocol error.
    let garbage = RawUpstream::start(Behaviour::Garbage).await;
    let proxy = Proxy::start("[admin]\nlisten = \"127.0.0.1:0\"\n", garbage.addr);
    let mut c = Client::connect(&proxy, true).await;
    let (parts, _) = c
        .text(
            Request::post(format!("https://localhost:{}/form", proxy.port))
                .body(Full::new(Bytes::from_static(b"a=1")))
                .unwrap(),
        )
        .await;
    assert_eq!(parts.status, 502);
    let text = metrics(proxy.admin_port()).await;
    assert_eq!(kinds(&text), [0.0, 0.0, 1.0], "connect, timeout, protocol:\n{text}");
}

// ------------------------------------------- HTTP/2 concurrent streams

/// Reads one HTTP/2 frame (type, flags, stream, payload); None at EOF.
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    match tokio::time::timeout(WITHIN, s.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return None,
        Err(_) => panic!("no HTTP/2 frame within {WITHIN:?}"),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    tokio::time::timeout(WITHIN, s.read_exact(&mut payload))
        .await
        .expect("frame payload within the bound")
        .ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Opens `limit + 1` streams at once on one connection to an app that
/// answers none of them: exactly `limit` reach the app, the last is refused.
async fn one_stream_over_the_limit_is_refused(config: &str, limit: u32) {
    let mut up = ProbeUpstream::start().await;
    let proxy = Proxy::start(config, up.addr);
    let mut tls = tls_stream(&proxy, &[b"h2"]).await;
    tls.write_all(&[PREFACE, &frame(4, 0, 0, &[])].concat()).await.unwrap();
    // The server's SETTINGS first: it announces the limit it enforces.
    let advertised = loop {
        let (kind, flags, _, payload) = read_frame(&mut tls).await.expect("server SETTINGS");
        if kind == 4 && flags & 1 == 0 {
            break payload
                .chunks_exact(6)
                .find(|s| u16::from_be_bytes([s[0], s[1]]) == 3)
                .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
        }
    };
    assert_eq!(advertised, Some(limit), "SETTINGS_MAX_CONCURRENT_STREAMS");
    let mut burst = frame(4, 1, 0, &[]);
    for i in 0..=limit {
        let path = format!("/hold/{i}");
        let block = [
            vec![0x82, 0x87, 0x04, path.len() as u8],
            path.into_bytes(),
            literal(b":authority", b"localhost"),
        ]
        .concat();
        burst.extend(frame(1, 0x5, 2 * i + 1, &block));
    }
    tls.write_all(&burst).await.unwrap();
    let last = 2 * limit + 1;
    loop {
        let (kind, _, stream, payload) = read_frame(&mut tls)
            .await
            .unwrap_or_else(|| panic!("connection closed before stream {last} was refused"));
        match kind {
            3 => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                assert_eq!(stream, last, "stream {stream} reset (code {code}) within the limit");
                assert_eq!(code, 7, "stream {last} must be refused with REFUSED_STREAM");
                break;
            }
            7 => panic!("GOAWAY instead of refusing one stream: {payload:?}"),
            _ => {}
        }
    }
    let mut paths = Vec::new();
    for _ in 0..limit {
        match up.next().await {
            Seen::Request(p) => paths.push(p),
            other => panic!("{other:?}"),
        }
    }
    paths.sort_by_key(|p| p[6..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..limit).map(|i| format!("/hold/{i}")).collect();
    assert_eq!(paths, expected);
    assert!(up.seen.try_recv().is_err(), "the refused stream reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_concurrent_streams_is_enforced() {
    // The README's default, then a configured small value.
    one_stream_over_the_limit_is_refused("", 100).await;
    one_stream_over_the_limit_is_refused("[limits]\nmax_concurrent_streams = 3\n", 3).await;
}

// ---------------------------------------------------- shutdown_timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_cuts_stragglers_and_still_exits_cleanly() {
    let mut up = ProbeUpstream::start().await;
    let proxy = Proxy::start("[limits]\nshutdown_timeout = \"1s\"\n", up.addr);

    // Stragglers: an HTTP/1.1 request and an HTTP/2 stream the app never
    // answers, and an open WebSocket tunnel.
    let mut h1 = Client::connect(&proxy, false).await;
    let h1_request = get(&proxy, "/hold/h1", false).body(empty()).unwrap();
    let h1_straggler = tokio::spawn(async move {
        match &mut h1 {
            Client::H1(s) => s.send_request(h1_request).await.map(|r| r.status()),
            Client::H2(_) => unreachable!(),
        }
    });
    let mut h2 = Client::connect(&proxy, true).await;
    let h2_request = get(&proxy, "/hold/h2", true).body(empty()).unwrap();
    let h2_straggler = tokio::spawn(async move {
        match &mut h2 {
            Client::H2(s) => s.send_request(h2_request).await.map(|r| r.status()),
            Client::H1(_) => unreachable!(),
        }
    });
    let mut seen = vec![up.next().await, up.next().await];
    let mut tunnel = open_tunnel(&proxy, b"before").await;
    seen.push(up.next().await);
    seen.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        seen,
        ["/hold/h1", "/hold/h2", "/ws"].map(|p| Seen::Request(p.into())),
        "all three stragglers reached the app"
    );

    proxy.signal("TERM");
    let signalled = Instant::now();
    let (status, proxy) = tokio::task::spawn_blocking(move || {
        let mut proxy = proxy;
        (proxy.wait_for_exit(WITHIN), proxy)
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "README: exits 0; log:\n{}", proxy.log());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM with shutdown_timeout = 1s"
    );
    let log = proxy.log();
    assert!(log.contains("shutdown_timeout reached"), "{log}");
    assert!(log.contains("stopped"), "{log}");

    // Each straggler was cut, none answered.
    for (name, straggler) in [("HTTP/1.1", h1_straggler), ("HTTP/2", h2_straggler)] {
        let outcome = tokio::time::timeout(WITHIN, straggler).await.unwrap().unwrap();
        assert!(outcome.is_err(), "{name} straggler got {outcome:?}");
    }
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WITHIN, tunnel.read_to_end(&mut rest))
        .await
        .expect("the tunnel is closed");
    assert!(rest.is_empty() && end.map_or(true, |n| n == 0), "{rest:?}");
}

// ------------------------------------------------------ reload warning

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_warns_by_name_about_listen_addresses() {
    let up = Upstream::start().await;
    let upstream = format!("http://{}", up.addr);
    let proxy = Proxy::start_without_listen_flag("[listen]\nhttps = \"127.0.0.1:0\"\n", &["--upstream", &upstream]);
    let restart = "takes effect on restart";

    // Nothing that needs a restart changed: no warning.
    proxy.signal("HUP");
    let log = proxy.wait_for_log_count("reloaded configuration", 1, WITHIN);
    assert!(!log.contains(restart), "{log}");

    // Ports 1-3 are never bound by a reload: these only take effect on restart.
    std::fs::write(
        proxy.dir.path().join("tlsfront.toml"),
        "[listen]\nhttps = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\n[admin]\nlisten = \"127.0.0.1:3\"\n",
    )
    .unwrap();
    proxy.signal("HUP");
    let log = proxy.wait_for_log_count("reloaded configuration", 2, WITHIN);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(restart)).collect();
    for key in ["listen.https", "listen.http", "admin.listen"] {
        assert!(
            warnings
                .iter()
                .any(|l| l.contains("WARN") && l.contains(&format!("{key} changed"))),
            "no warning naming {key}:\n{log}"
        );
    }
    // And the old listener still serves.
    let mut c = Client::connect(&proxy, false).await;
    let (parts, _) = c.text(get(&proxy, "/echo", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
}

// --------------------------------------------------------- TLS versions

/// What one `openssl s_client` handshake with the proxy gave.
struct Handshake {
    /// The version negotiated, None when the handshake failed.
    version: Option<String>,
    /// The server answered with a TLS alert (so a ClientHello was sent and refused).
    alerted: bool,
    output: String,
}

/// Runs `openssl s_client` against `port` with `args` (bounded).
fn s_client(port: u16, ca: &Path, args: &[&str]) -> Handshake {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("the openssl command-line tool is needed for the TLS version tests (apt-get install openssl)");
    let deadline = Instant::now() + WITHIN;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("openssl s_client {args:?} did not finish within {WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = std::fs::read_to_string(&out_path).unwrap();
    // "New, TLSv1.3, Cipher is ..." or "New, (NONE), Cipher is (NONE)".
    let version = output
        .lines()
        .find_map(|l| l.strip_prefix("New, ")?.split(',').next())
        .filter(|v| *v != "(NONE)")
        .map(str::to_string);
    let alerted = output.contains("SSL alert number");
    Handshake {
        version,
        alerted,
        output,
    }
}

/// The client offers only the version in `flag`; asserts what it got.
fn assert_handshake(proxy: &Proxy, flag: &str, expected: Option<&str>) {
    // SECLEVEL=0: OpenSSL 3 would otherwise refuse TLS 1.0/1.1 itself.
    let h = s_client(proxy.port, &proxy.ca(), &[flag, "-cipher", "DEFAULT@SECLEVEL=0"]);
    match expected {
        Some(version) => {
            assert_eq!(h.version.as_deref(), Some(version), "{flag}:\n{}", h.output);
            assert!(h.output.contains("Verify return code: 0 (ok)"), "{flag}:\n{}", h.output);
        }
        None => {
            assert_eq!(h.version, None, "{flag} must be refused:\n{}", h.output);
            assert!(
                h.alerted,
                "{flag}: the server must refuse the hello with an alert:\n{}",
                h.output
            );
        }
    }
}

#[test]
fn old_tls_versions_are_refused_and_min_version_is_honoured() {
    let nowhere: SocketAddr = ([127, 0, 0, 1], 9).into();
    let proxy = Proxy::start("", nowhere);
    assert_handshake(&proxy, "-tls1", None);
    assert_handshake(&proxy, "-tls1_1", None);
    assert_handshake(&proxy, "-tls1_2", Some("TLSv1.2"));
    assert_handshake(&proxy, "-tls1_3", Some("TLSv1.3"));

    let proxy = Proxy::start("[tls]\nmin_version = \"1.3\"\n", nowhere);
    assert_handshake(&proxy, "-tls1_1", None);
    assert_handshake(&proxy, "-tls1_2", None);
    assert_handshake(&proxy, "-tls1_3", Some("TLSv1.3"));
}

// ---------------------------------------------------- streamed uploads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_reach_the_app_before_the_client_has_sent_them_whole() {
    const TOTAL: usize = 100_000;
    const FIRST: usize = 4096;
    let mut up = ProbeUpstream::start().await;
    let proxy = Proxy::start("", up.addr);

    // HTTP/1.1 with Content-Length: the rest is sent only once the app has
    // the first bytes, so a proxy that buffered the body would stall here.
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(
        format!(
            "POST /upload-probe HTTP/1.1\r\nHost: localhost\r\nContent-Length: {TOTAL}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tls.write_all(&[b'a'; FIRST]).await.unwrap();
    assert_eq!(up.next().await, Seen::Request("/upload-probe".into()));
    match up.next().await {
        Seen::BodyStarted(n) => assert!(n > 0 && n <= FIRST, "{n}"),
        other => panic!("{other:?}"),
    }
    tls.write_all(&vec![b'b'; TOTAL - FIRST]).await.unwrap();
    let response = read_to_end(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(&format!("\r\n\r\n{TOTAL}\n")), "{response}");

    // HTTP/2: the same with DATA frames.
    let tls = tls_stream(&proxy, &[b"h2"]).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (response, mut upload) = client
        .send_request(
            Request::post(format!("https://localhost:{}/upload-probe", proxy.port))
                .body(())
                .unwrap(),
            false,
        )
        .unwrap();
    upload.send_data(Bytes::from(vec![b'a'; FIRST]), false).unwrap();
    assert_eq!(up.next().await, Seen::Request("/upload-probe".into()));
    match up.next().await {
        Seen::BodyStarted(n) => assert!(n > 0 && n <= FIRST, "{n}"),
        other => panic!("{other:?}"),
    }
    upload.send_data(Bytes::from(vec![b'b'; TOTAL - FIRST]), true).unwrap();
    let response = tokio::time::timeout(WITHIN, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WITHIN, body.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8_lossy(&text), format!("{TOTAL}\n"));
}
