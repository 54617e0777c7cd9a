//! Shared pieces of the black-box tests: the real `tlsfront` binary on an
//! ephemeral port, a real upstream on loopback, and a real TLS client that
//! trusts the generated development CA.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A running `tlsfront run` process. Killed on drop.
pub struct Proxy {
    child: Child,
    /// The https port it bound.
    pub port: u16,
    /// Its working directory (holds `certs/` and the config).
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// The threads copying stderr and stdout: joined once the process has
    /// exited, so that its last lines are in `log()` and `stdout()`.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts the binary with `config_toml` in front of `upstream`.
    pub fn start(config_toml: &str, upstream: SocketAddr) -> Proxy {
        Self::start_with_args(config_toml, &["--upstream", &format!("http://{upstream}")])
    }

    /// Starts the binary with a config file and extra arguments.
    pub fn start_with_args(config_toml: &str, extra: &[&str]) -> Proxy {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::start_without_listen_flag(config_toml, &args)
    }

    /// Starts `tlsfront run -c <config> <extra>...` with no `--listen`
    /// override, so `listen.https` comes from the file (which must bind
    /// 127.0.0.1, for the port to be found in the log).
    pub fn start_without_listen_flag(config_toml: &str, extra: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tlsfront.toml");
        std::fs::write(&config, config_toml).unwrap();
        let mut args: Vec<String> = vec!["run".into(), "-c".into(), config.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tlsfront");
        let stderr = child.stderr.take().unwrap();
        let stdout_pipe = child.stdout.take().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        {
            let stdout = stdout.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout_pipe).lines().map_while(Result::ok) {
                    let mut s = stdout.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            }));
        }
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if !sent {
                        if let Some(rest) = line.split("listening on https://127.0.0.1:").nth(1) {
                            let port: u16 = rest
                                .split(|c: char| !c.is_ascii_digit())
                                .next()
                                .unwrap()
                                .parse()
                                .unwrap();
                            let _ = tx.send(port);
                            sent = true;
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!("tlsfront did not report its port; log:\n{}", log.lock().unwrap());
            }
        };
        Proxy {
            child,
            port,
            dir,
            log,
            stdout,
            readers,
        }
    }

    /// Everything it logged so far (stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Everything it wrote to stdout so far (the access log).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits (bounded) until the log contains `needle`; returns the log.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within {within:?}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until `needle` was logged at least `times` times; returns the log.
    pub fn wait_for_log_count(&self, needle: &str, times: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= times {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged {times} times within {within:?}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the process to exit by itself; its exit status.
    pub fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tlsfront still running after {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The admin port, from the log line announcing it.
    pub fn admin_port(&self) -> u16 {
        let log = self.wait_for_log("admin endpoint on http://127.0.0.1:", Duration::from_secs(5));
        let rest = log.split("admin endpoint on http://127.0.0.1:").nth(1).unwrap();
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Sends a signal (TERM, HUP, ...).
    pub fn signal(&self, sig: &str) {
        unsafe_kill(self.child.id(), sig);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The development CA it generated.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    /// `https://localhost:<port>`
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "tlsfront did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET (for the admin endpoint): status and body.
pub async fn plain_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Reads from `s` until `needle` appears or the stream ends (bounded).
pub async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, needle: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !buf.windows(needle.len()).any(|w| w == needle) {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "timed out waiting for {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    buf
}

/// `kill -SIG pid` without a libc dependency in the tests.
pub fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A TLS connector trusting `ca` and offering `alpn`.
pub fn connector(ca: &Path, alpn: &[&[u8]]) -> TlsConnector {
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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// How long a test waits for a connection, a TLS handshake or a response
/// head before it fails (instead of hanging the test run).
pub const WAIT: Duration = Duration::from_secs(30);

/// A TLS stream to the proxy, verified for `localhost`.
pub async fn tls_stream(proxy: &Proxy, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connect = async {
        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        connector(&proxy.ca(), alpn)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the dev certificate")
    };
    tokio::time::timeout(WAIT, connect)
        .await
        .unwrap_or_else(|_| panic!("no TLS connection to the proxy within {WAIT:?}"))
}

/// A client over one connection, HTTP/1.1 or HTTP/2.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    /// Connects with HTTP/1.1 (ALPN http/1.1) or HTTP/2 (ALPN h2).
    pub async fn connect(proxy: &Proxy, h2: bool) -> Client {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let io = TokioIo::new(tls_stream(proxy, alpn).await);
        let handshake = async {
            if h2 {
                let (send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Client::H2(send)
            } else {
                let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                Client::H1(send)
            }
        };
        tokio::time::timeout(WAIT, handshake)
            .await
            .unwrap_or_else(|_| panic!("no HTTP handshake within {WAIT:?}"))
    }

    /// Sends a request and returns the response head and its streamed body.
    /// No head within [`WAIT`] fails the test, naming the request.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        let what = format!("{} {}", req.method(), req.uri());
        let response = async {
            match self {
                Client::H1(s) => s.send_request(req).await,
                Client::H2(s) => s.send_request(req).await,
            }
        };
        tokio::time::timeout(WAIT, response)
            .await
            .unwrap_or_else(|_| panic!("no response head to {what} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }

    /// Sends and collects the whole body as text.
    pub async fn text(&mut self, req: Request<Full<Bytes>>) -> (http::response::Parts, String) {
        let resp = self.send(req).await;
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(Duration::from_secs(20), body.collect())
            .await
            .expect("body within 20 s")
            .unwrap()
            .to_bytes();
        (parts, String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A GET with the Host the browser would send (HTTP/1.1) or the authority (HTTP/2).
pub fn get(proxy: &Proxy, path: &str, h2: bool) -> http::request::Builder {
    if h2 {
        Request::get(format!("https://localhost:{}{path}", proxy.port))
    } else {
        Request::get(path).header("host", format!("localhost:{}", proxy.port))
    }
}

/// The lines `name: value` of an echoed request, as (name, value) pairs.
pub fn echoed_headers(body: &str) -> Vec<(String, String)> {
    body.lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// All values of a header in an echoed request.
pub fn echoed<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Accepts any certificate (after checking the handshake signature against
/// it), so that a test can see which one is served for any SNI.
#[derive(Debug)]
pub struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate served to a client sending `sni` (or no SNI), from a
/// fresh client each time so no session is resumed; the handshake's error
/// when it fails.
pub async fn served_leaf(port: u16, sni: Option<&str>) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_string()).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "no handshake within 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap_or_default()[0]
        .as_ref()
        .to_vec())
}

pub mod h2raw;
pub mod raw_upstream;
pub mod upstream;

/// A loopback address that refuses connections for as long as this value
/// lives. The port is bound but never listened on: connecting gets a reset,
/// and no other test running at the same time can be given the port (a port
/// that was merely free a moment ago can be taken by another test's server,
/// which then answers where a refusal was expected).
pub struct RefusingAddr {
    _bound: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

impl RefusingAddr {
    pub fn new() -> RefusingAddr {
        let bound = tokio::net::TcpSocket::new_v4().unwrap();
        bound.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = bound.local_addr().unwrap();
        RefusingAddr { _bound: bound, addr }
    }
}
