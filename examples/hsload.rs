//! Handshake load generator for `bench/`: N concurrent loops of "connect,
//! full TLS 1.3 handshake (no resumption), GET /, read the answer, close".
//! wrk cannot measure this: it resumes sessions and busy-polls handshakes.
//!
//! usage: hsload ADDR CONNS SECONDS

#[path = "common/accept_any.rs"]
mod accept_any;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use accept_any::AcceptAnyCert;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: hsload ADDR CONNS SECONDS");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let conns: usize = args[2].parse().expect("CONNS is a number");
    let secs: u64 = args[3].parse().expect("SECONDS is a number");
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // The same bulk cipher and group the peers are measured with.
    provider.cipher_suites = vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is supported")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (connector, addr, done, errors) = (connector.clone(), addr.clone(), done.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let name = ServerName::try_from("localhost").expect("valid name");
                let mut buf = vec![0u8; 4096];
                while Instant::now() < stop {
                    let ok = async {
                        let tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
                        tcp.set_nodelay(true).ok()?;
                        let mut tls = connector.connect(name.clone(), tcp).await.ok()?;
                        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                            .await
                            .ok()?;
                        let mut total = 0;
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) => break,
                                Ok(n) => total += n,
                                Err(_) => break,
                            }
                        }
                        (total > 0).then_some(())
                    }
                    .await;
                    match ok {
                        Some(()) => done.fetch_add(1, Ordering::Relaxed),
                        None => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "handshakes: {n} errors: {} seconds: {elapsed:.2} rate: {:.1}/s",
        errors.load(Ordering::Relaxed),
        n as f64 / elapsed
    );
}
