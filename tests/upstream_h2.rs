//! HTTP/2 and TLS upstreams, black-box: the real binary in front of a real
//! HTTP/2 server (`h2c://`, prior knowledge) and real TLS servers
//! (`https://`, verified with a test CA given as `ca = ...`).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Client, Proxy};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the test upstream saw of each request, sent back as the body:
/// `version`, `authority`, `host`, `te`, `path`, one per line.
async fn describe(req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map_or("-".to_string(), |v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let text = format!(
        "version={:?}\nauthority={}\nhost={}\nte={}\npath={}\n",
        req.version(),
        req.uri().authority().map_or("-", |a| a.as_str()),
        header("host"),
        header("te"),
        req.uri().path(),
    );
    let path = req.uri().path().to_string();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = Full::new(Bytes::from(text));
    let body: TestBody = if path == "/trailers" {
        // As a gRPC server ends a call: the status comes after the data.
        body.with_trailers(async {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            t.insert("x-checksum", HeaderValue::from_static("c0ffee"));
            Some(Ok(t))
        })
        .boxed()
    } else {
        body.boxed()
    };
    Ok(Response::new(body))
}

/// [`describe`], and a 101 to `upgrade: echo` requests followed by an echo
/// of the first bytes on the upgraded connection.
async fn describe_or_upgrade(mut req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    if !req.headers().contains_key("upgrade") {
        return describe(req).await;
    }
    let version = format!("{:?}", req.version());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if let Ok(upgraded) = upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 64];
            if let Ok(n) = io.read(&mut buf).await {
                let _ = io.write_all(&buf[..n]).await;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .header("x-upstream-version", version)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap())
}

/// A counting HTTP/2-only (prior knowledge) server; `goaway` makes every
/// open connection send GOAWAY and close once idle.
struct H2cServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    goaway: Arc<Notify>,
}

async fn h2c_server() -> H2cServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let goaway = Arc::new(Notify::new());
    let (count, signal) = (connections.clone(), goaway.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let signal = signal.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(describe));
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = signal.notified() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    H2cServer {
        addr,
        connections,
        goaway,
    }
}

/// A test CA and a leaf for `names`, as PEM (CA) and DER (leaf, key).
struct TestPki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn test_pki(ca_name: &str, names: &[&str]) -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// A TLS server (HTTP/1.1 and HTTP/2, whichever ALPN picks) offering `alpn`.
async fn tls_server(pki: &TestPki, alpn: &[&[u8]]) -> SocketAddr {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.leaf.clone()], pki.key.clone_key())
            .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service_fn(describe_or_upgrade))
                    .await;
            });
        }
    });
    addr
}

fn start(routes: &str) -> Proxy {
    Proxy::start_with_args(routes, &[])
}

fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in {body:?}"))
}

fn write_ca(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_gets_http2_with_authority_and_trailers_come_back() {
    let up = h2c_server().await;
    let proxy = start(&format!("[[route]]\nurl = \"h2c://{}\"\n", up.addr));
    let authority = format!("localhost:{}", proxy.port);

    // HTTP/2 client, as gRPC is: te: trailers goes through, trailers come back.
    let mut h2 = Client::connect(&proxy, true).await;
    let req = Request::post(format!("https://{authority}/trailers"))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = h2.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("the upstream's trailers reach the client");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("x-checksum").unwrap(), "c0ffee");
    let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    assert_eq!(field(&body, "version"), "HTTP/2.0", "{body}");
    assert_eq!(field(&body, "authority"), authority, "Host becomes :authority: {body}");
    assert_eq!(field(&body, "host"), "-", "no Host header next to :authority: {body}");
    assert_eq!(field(&body, "te"), "trailers", "{body}");

    // HTTP/1.1 client: still HTTP/2 upstream; a TE other than trailers never goes.
    let mut h1 = Client::connect(&proxy, false).await;
    let req = Request::get("/plain")
        .header("host", &authority)
        .header("te", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = h1.text(req).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "version"), "HTTP/2.0", "{body}");
    assert_eq!(field(&body, "authority"), authority, "{body}");
    assert_eq!(field(&body, "te"), "-", "{body}");
    assert_eq!(field(&body, "path"), "/plain", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_share_one_connection_and_it_is_remade_after_goaway() {
    let up = h2c_server().await;
    let proxy = start(&format!("[[route]]\nurl = \"h2c://{}\"\n", up.addr));

    // 20 requests at once, over 4 client connections: one upstream connection.
    let mut tasks = Vec::new();
    for c in 0..4 {
        let mut client = Client::connect(&proxy, c % 2 == 0).await;
        let h2 = c % 2 == 0;
        tasks.push(tokio::spawn({
            let port = proxy.port;
            async move {
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    if let Client::H1(s) = &mut client {
                        s.ready().await.unwrap();
                    }
                    let req = if h2 {
                        Request::get(format!("https://localhost:{port}/slow"))
                    } else {
                        Request::get("/slow").header("host", format!("localhost:{port}"))
                    };
                    let (parts, _) = client.text(req.body(Full::new(Bytes::new())).unwrap()).await;
                    statuses.push(parts.status);
                }
                statuses
            }
        }));
    }
    for t in tasks {
        for status in t.await.unwrap() {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1, "one shared HTTP/2 connection");

    // The server says GOAWAY: the next requests get a new connection, and no error.
    up.goaway.notify_waiters();
    let mut client = Client::connect(&proxy, true).await;
    for _ in 0..3 {
        let (parts, body) = client
            .text(
                common::get(&proxy, "/after", true)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(parts.status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        2,
        "reconnected once after GOAWAY"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_to_h2c_server_is_refused_with_a_clear_502() {
    let up = h2c_server().await;
    let proxy = start(&format!("[[route]]\nurl = \"h2c://{}\"\n", up.addr));
    let mut h1 = Client::connect(&proxy, false).await;
    let req = Request::get("/ws")
        .header("host", format!("localhost:{}", proxy.port))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = h1.text(req).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("HTTP/2") && body.contains("upgrade"), "{body}");
    assert_eq!(up.connections.load(Ordering::SeqCst), 0, "nothing was sent upstream");
    proxy.wait_for_log("upgrade refused", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_with_route_ca_and_server_name_uses_alpn() {
    let pki = test_pki("upstream test CA", &["upstream.test"]);
    let h2_server = tls_server(&pki, &[b"h2", b"http/1.1"]).await;
    let h1_server = tls_server(&pki, &[b"http/1.1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), "ca.pem", &pki.ca_pem);
    let proxy = start(&format!(
        "[[route]]\npath = \"/two\"\nurl = \"https://{h2_server}\"\nca = \"{ca}\"\nserver_name = \"upstream.test\"\n\
         [[route]]\npath = \"/one\"\nurl = \"https://{h1_server}\"\nca = \"{ca}\"\nserver_name = \"upstream.test\"\n"
    ));
    let mut client = Client::connect(&proxy, true).await;
    let (parts, body) = client
        .text(
            common::get(&proxy, "/two/x", true)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "version"), "HTTP/2.0", "ALPN chose h2: {body}");
    assert_eq!(field(&body, "authority"), format!("localhost:{}", proxy.port), "{body}");
    let (parts, body) = client
        .text(
            common::get(&proxy, "/one/x", true)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "version"), "HTTP/1.1", "ALPN chose http/1.1: {body}");
    assert_eq!(field(&body, "host"), format!("localhost:{}", proxy.port), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_https_server_that_speaks_h2_goes_over_http1() {
    use tokio::io::AsyncWriteExt;
    let pki = test_pki("upstream test CA", &["upstream.test"]);
    let server = tls_server(&pki, &[b"h2", b"http/1.1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), "ca.pem", &pki.ca_pem);
    let proxy = start(&format!(
        "[[route]]\nurl = \"https://{server}\"\nca = \"{ca}\"\nserver_name = \"upstream.test\"\n"
    ));
    // First a plain request: the server is now known to pick h2.
    let mut client = Client::connect(&proxy, true).await;
    let (_, body) = client
        .text(common::get(&proxy, "/", true).body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(field(&body, "version"), "HTTP/2.0", "{body}");
    // The upgrade still works: it gets its own HTTP/1.1 connection.
    let mut tls = common::tls_stream(&proxy, &[b"http/1.1"]).await;
    let head = format!(
        "GET /echo HTTP/1.1\r\nHost: localhost:{}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        proxy.port
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&common::read_until(&mut tls, b"\r\n\r\n").await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-upstream-version: http/1.1"),
        "{answer}"
    );
    tls.write_all(b"ping").await.unwrap();
    let echoed = common::read_until(&mut tls, b"ping").await;
    assert!(echoed.ends_with(b"ping"), "{:?}", String::from_utf8_lossy(&echoed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_wrong_ca_or_name_is_a_clear_502() {
    let pki = test_pki("upstream test CA", &["upstream.test"]);
    let other = test_pki("another CA", &["upstream.test"]);
    let server = tls_server(&pki, &[b"h2", b"http/1.1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let right_ca = write_ca(dir.path(), "right.pem", &pki.ca_pem);
    let wrong_ca = write_ca(dir.path(), "wrong.pem", &other.ca_pem);
    let proxy = start(&format!(
        // A CA that did not sign the server's certificate.
        "[[route]]\npath = \"/wrong-ca\"\nurl = \"https://{server}\"\nca = \"{wrong_ca}\"\nserver_name = \"upstream.test\"\n\
         # The right CA, but the certificate is not for 127.0.0.1 (no server_name).\n\
         [[route]]\npath = \"/wrong-name\"\nurl = \"https://{server}\"\nca = \"{right_ca}\"\n"
    ));
    for (path, why) in [
        ("/wrong-ca", "UnknownIssuer"),
        ("/wrong-name", "certificate not valid for name \"127.0.0.1\""),
    ] {
        let mut client = Client::connect(&proxy, false).await;
        let req = common::get(&proxy, path, false).body(Full::new(Bytes::new())).unwrap();
        let (parts, body) = client.text(req).await;
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{path}: {body}");
        assert!(body.contains("verified TLS connection"), "{path}: {body}");
        let log = proxy.wait_for_log(why, Duration::from_secs(5));
        assert!(
            log.lines()
                .any(|l| l.contains("TLS handshake failed") && l.contains(why) && l.contains(path)),
            "{path}: no log line naming the TLS failure:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ca_and_server_name_keys_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write_ca(dir.path(), "junk.pem", "not a certificate\n");
    for (route, key, says) in [
        (
            format!("url = \"https://127.0.0.1:1\"\nca = \"{not_pem}\""),
            "route",
            "no certificate",
        ),
        (
            "url = \"https://127.0.0.1:1\"\nca = \"/nonexistent/ca.pem\"".to_string(),
            "route",
            "cannot read the CA file",
        ),
        (
            "url = \"https://127.0.0.1:1\"\nserver_name = \"not a name\"".to_string(),
            "route",
            "DNS name",
        ),
        (
            "url = \"http://127.0.0.1:1\"\nserver_name = \"app.internal\"".to_string(),
            "server_name",
            "apply to https:// servers",
        ),
        ("url = \"ftp://127.0.0.1:1\"".to_string(), "route", "unknown scheme"),
    ] {
        let path = dir.path().join("t.toml");
        std::fs::write(&path, format!("[[route]]\n{route}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tlsfront"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{route}: accepted");
        assert!(err.contains(key) && err.contains(says), "{route}: {err}");
    }
}
