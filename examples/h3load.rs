//! HTTP/3 load client for the benchmark's HTTP/3 row (h2load here has no
//! QUIC): CONNS QUIC connections, each with STREAMS requests in flight at
//! once (a new one as each ends), GETs for PATH, for SECONDS after a
//! warm-up. Prints one line: `requests=N errors=E seconds=S rps=R`.
//!
//! usage: h3load ADDR HOST PATH CONNS STREAMS SECONDS [WARMUP_SECONDS]
//!
//! Offers TLS_AES_128_GCM_SHA256 and X25519 only, as the harness's other
//! clients do, so that every server does the same crypto work; the
//! throwaway benchmark certificate is accepted (signatures still checked).

#[path = "common/accept_any.rs"]
mod accept_any;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use accept_any::AcceptAnyCert;
use bytes::{Buf, Bytes};

/// What all request loops share.
struct Load {
    counting: AtomicBool,
    stop: AtomicBool,
    done: AtomicU64,
    errors: AtomicU64,
}

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn request_loop(mut sender: Sender, uri: http::Uri, load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        let ok = one_request(&mut sender, &uri).await;
        if load.counting.load(Ordering::Relaxed) {
            if ok {
                load.done.fetch_add(1, Ordering::Relaxed);
            } else {
                load.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !ok {
            return;
        }
    }
}

async fn one_request(sender: &mut Sender, uri: &http::Uri) -> bool {
    let req = http::Request::get(uri.clone())
        .header("user-agent", "h3load")
        .header("accept", "*/*")
        .body(())
        .expect("valid request");
    let Ok(mut stream) = sender.send_request(req).await else {
        return false;
    };
    if stream.finish().await.is_err() {
        return false;
    }
    let Ok(response) = stream.recv_response().await else {
        return false;
    };
    let mut body = 0usize;
    loop {
        match stream.recv_data().await {
            Ok(Some(chunk)) => body += chunk.remaining(),
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    response.status() == http::StatusCode::OK && body > 0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: h3load ADDR HOST PATH CONNS STREAMS SECONDS [WARMUP_SECONDS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR like 127.0.0.1:8443");
    let host = args[2].clone();
    let uri: http::Uri = format!("https://{host}{}", args[3]).parse().expect("PATH like /");
    let conns: usize = args[4].parse().expect("CONNS");
    let streams: usize = args[5].parse().expect("STREAMS");
    let seconds: f64 = args[6].parse().expect("SECONDS");
    let warmup: f64 = args.get(7).map_or(2.0, |w| w.parse().expect("WARMUP_SECONDS"));

    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS config");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("UDP socket");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));

    let load = Arc::new(Load {
        counting: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let connection = endpoint
            .connect(addr, &host)
            .expect("connect")
            .await
            .unwrap_or_else(|e| {
                eprintln!("h3load: QUIC handshake with {addr} failed: {e}");
                std::process::exit(1);
            });
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .expect("HTTP/3 connection");
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        for _ in 0..streams {
            tasks.push(tokio::spawn(request_loop(sender.clone(), uri.clone(), load.clone())));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    load.counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    load.counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    load.stop.store(true, Ordering::Relaxed);
    let done = load.done.load(Ordering::Relaxed);
    let errors = load.errors.load(Ordering::Relaxed);
    println!(
        "requests={done} errors={errors} seconds={elapsed:.3} rps={:.0}",
        done as f64 / elapsed
    );
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    endpoint.close(0u32.into(), b"");
}
