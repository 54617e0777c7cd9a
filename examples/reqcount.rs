//! Upstream and client for `bench/instructions.sh`, which counts with
//! callgrind the instructions tlsfront spends per proxied request. Neither
//! side runs under valgrind; only tlsfront does.
//!
//! usage:
//!   reqcount upstream ADDR                 HTTP/1.1 keep-alive app: 100-byte body + Set-Cookie
//!   reqcount h1 ADDR CONNS REQUESTS        HTTPS HTTP/1.1 keep-alive, CONNS connections in turn
//!   reqcount h2 ADDR CONNS STREAMS REQUESTS HTTP/2, CONNS connections x STREAMS at once
//!
//! The clients open their connections and send 20 requests on each (warm-up:
//! handshakes, first-request allocations, the upstream pool), print `warm`,
//! wait for a line on stdin (the script zeroes callgrind's counters), send
//! REQUESTS more and print `done`. Every response must be a 200 with the
//! whole body, or the client exits non-zero.

#[path = "common/accept_any.rs"]
mod accept_any;

use std::convert::Infallible;
use std::io::BufRead;
use std::sync::Arc;

use accept_any::AcceptAnyCert;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

const WARMUP_PER_CONN: usize = 20;
const BODY: &[u8; 100] =
    b"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

fn fail(msg: &str) -> ! {
    eprintln!("reqcount: {msg}");
    std::process::exit(1);
}

fn number(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| fail(&format!("not a number: {s}")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["upstream", addr] => runtime.block_on(upstream(addr)),
        ["h1", addr, conns, requests] => runtime.block_on(client(addr, false, number(conns), 1, number(requests))),
        ["h2", addr, conns, streams, requests] => {
            runtime.block_on(client(addr, true, number(conns), number(streams), number(requests)))
        }
        _ => fail("usage: reqcount upstream ADDR | h1 ADDR CONNS REQUESTS | h2 ADDR CONNS STREAMS REQUESTS"),
    }
}

/// The app: what the shared harness's nginx upstream answers.
async fn upstream(addr: &str) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    println!("listening");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
                resp.headers_mut().insert(
                    http::header::SET_COOKIE,
                    http::HeaderValue::from_static("session=abc; Path=/"),
                );
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn connector(h2: bool) -> tokio_rustls::TlsConnector {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| fail(&format!("TLS 1.3: {e}")))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A browser-like GET: the default policy has real work on it.
fn request(h2: bool, authority: &str) -> Request<Empty<Bytes>> {
    let mut builder = Request::get(format!("https://{authority}/"));
    if !h2 {
        builder = builder.header("host", authority);
    }
    builder = builder
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("accept-language", "en-US,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br")
        .header("cookie", "session=abc");
    // bench/protect.sh: basic-auth credentials on every request.
    if let Ok(authorization) = std::env::var("REQCOUNT_AUTHORIZATION") {
        builder = builder.header("authorization", authorization);
    }
    builder
        .body(Empty::new())
        .unwrap_or_else(|e| fail(&format!("request: {e}")))
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn get(&mut self, authority: &str) {
        let resp = match self {
            Sender::H1(s) => {
                let _ = s.ready().await;
                s.send_request(request(false, authority)).await
            }
            Sender::H2(s) => s.send_request(request(true, authority)).await,
        }
        .unwrap_or_else(|e| fail(&format!("request failed: {e}")));
        if resp.status() != 200 {
            fail(&format!("status {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| fail(&format!("body: {e}")))
            .to_bytes();
        if body.len() != BODY.len() {
            fail(&format!("body of {} bytes", body.len()));
        }
    }

    fn clone_h2(&self) -> Sender {
        match self {
            Sender::H1(_) => fail("HTTP/1.1 connections carry one request at a time"),
            Sender::H2(s) => Sender::H2(s.clone()),
        }
    }
}

async fn connect(addr: &str, h2: bool, tls: &tokio_rustls::TlsConnector) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost").unwrap_or_else(|e| fail(&e.to_string()));
    let stream = tls
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| fail(&format!("TLS: {e}")));
    let io = TokioIo::new(stream);
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap_or_else(|e| fail(&format!("h2 handshake: {e}")));
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .unwrap_or_else(|e| fail(&format!("h1 handshake: {e}")));
        tokio::spawn(conn);
        Sender::H1(sender)
    }
}

/// `per_lane` requests on each lane (a connection, or a stream slot of one), all lanes at once.
async fn run(lanes: Vec<Sender>, per_lane: usize, authority: &Arc<str>) -> Vec<Sender> {
    let mut tasks = tokio::task::JoinSet::new();
    for mut lane in lanes {
        let authority = authority.clone();
        tasks.spawn(async move {
            for _ in 0..per_lane {
                lane.get(&authority).await;
            }
            lane
        });
    }
    let mut back = Vec::new();
    while let Some(done) = tasks.join_next().await {
        back.push(done.unwrap_or_else(|e| fail(&format!("client task: {e}"))));
    }
    back
}

async fn client(addr: &str, h2: bool, conns: usize, streams: usize, requests: usize) {
    let tls = connector(h2);
    let authority: Arc<str> = Arc::from(addr.replace("127.0.0.1", "localhost"));
    let mut lanes = Vec::new();
    for _ in 0..conns.max(1) {
        let first = connect(addr, h2, &tls).await;
        for _ in 1..streams.max(1) {
            lanes.push(first.clone_h2());
        }
        lanes.push(first);
    }
    let lanes = run(lanes, WARMUP_PER_CONN, &authority).await;
    println!("warm");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let per_lane = requests.div_ceil(lanes.len());
    let total = per_lane * lanes.len();
    let _lanes = run(lanes, per_lane, &authority).await;
    println!("done {total}");
}
