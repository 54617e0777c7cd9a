//! Differential: HTTP/2 streams served in their connection's task
//! (`tlsfront::server::streams`, what tlsfront runs) against hyper's
//! reference (every stream a tokio task of its own).
//!
//! Input: a batch of requests (method, path, headers, body in chunks, how
//! much the app answers) sent at once over one HTTP/2 connection by hyper's
//! client, through an in-memory pipe, to a hyper HTTP/2 server whose app
//! echoes what it got. The same batch goes to both servers, each on a fresh
//! current-thread runtime.
//!
//! Properties:
//!  1. never panics, never hangs (a request without an outcome after 5 s
//!     fails the run);
//!  2. for every request, what the client gets back (status, headers, body)
//!     or whether it failed, is the same from both servers;
//!  3. what the app received (method, path, headers, body) is the same.
#![no_main]

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use libfuzzer_sys::fuzz_target;
use tlsfront::server::streams::{InConnectionTask, WithStreams};

#[derive(Arbitrary, Debug)]
struct Batch {
    requests: Vec<Req>,
    /// Flow-control window the server grants per stream (small ones make
    /// streams wait on each other).
    window: u16,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: u8,
    path: Vec<u8>,
    headers: Vec<(u8, Vec<u8>)>,
    body: Vec<Vec<u8>>,
    /// The app answers with the request body repeated this many times (0-7).
    repeat: u8,
}

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"];
const NAMES: [&str; 8] = [
    "accept",
    "cookie",
    "x-custom",
    "content-type",
    "user-agent",
    "te",
    "x-forwarded-for",
    "authorization",
];

/// What one request came to, as the client saw it, and what the app saw.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Answered {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    Failed,
    NotSent,
}

async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::from_static(b"body error"),
    };
    let repeat = parts
        .headers
        .get("x-repeat")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1);
    let mut seen = format!("{} {}\n", parts.method, parts.uri);
    for (name, value) in &parts.headers {
        seen.push_str(&format!("{name}: {value:?}\n"));
    }
    let mut out = seen.into_bytes();
    for _ in 0..repeat {
        out.extend_from_slice(&body);
    }
    Ok(Response::builder()
        .status(200)
        .header("x-echo", "1")
        .body(Full::new(Bytes::from(out)))
        .unwrap())
}

fn build(req: &Req) -> Option<Request<StreamBody<futures_stream::Chunks>>> {
    let method = METHODS[usize::from(req.method) % METHODS.len()];
    let path: String = req.path.iter().take(64).map(|b| char::from(b'!' + b % 94)).collect();
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("https://localhost/{path}"))
        .header("x-repeat", (req.repeat % 8).to_string());
    for (name, value) in req.headers.iter().take(8) {
        let value = http::HeaderValue::from_bytes(value).ok()?;
        builder = builder.header(NAMES[usize::from(*name) % NAMES.len()], value);
    }
    let chunks: Vec<Bytes> = req
        .body
        .iter()
        .take(4)
        .map(|c| Bytes::copy_from_slice(&c[..c.len().min(4096)]))
        .collect();
    builder.body(StreamBody::new(futures_stream::Chunks(chunks))).ok()
}

/// The body's chunks as frames (no futures-util in this crate's deps).
mod futures_stream {
    use super::*;
    pub struct Chunks(pub Vec<Bytes>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
            if self.0.is_empty() {
                return std::task::Poll::Ready(None);
            }
            std::task::Poll::Ready(Some(Ok(Frame::data(self.0.remove(0)))))
        }
    }
}

fn run(batch: &Batch, in_task: bool) -> Vec<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let window = u32::from(batch.window).max(1024);
        let service = hyper::service::service_fn(app);
        if in_task {
            let mut builder = hyper::server::conn::http2::Builder::new(InConnectionTask);
            builder.initial_stream_window_size(window);
            let conn = builder.serve_connection(TokioIo::new(server_io), service);
            tokio::spawn(WithStreams::new(Box::pin(conn)));
        } else {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.initial_stream_window_size(window);
            let conn = builder.serve_connection(TokioIo::new(server_io), service);
            tokio::spawn(conn);
        }
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
            .await
            .expect("handshake over a pipe");
        tokio::spawn(conn);
        let mut waiting = Vec::new();
        for req in batch.requests.iter().take(16) {
            match build(req) {
                Some(request) => {
                    let mut sender = sender.clone();
                    waiting.push(Some(tokio::spawn(async move {
                        let response = sender.send_request(request).await.ok()?;
                        let (parts, body) = response.into_parts();
                        let body = body.collect().await.ok()?.to_bytes();
                        let mut headers: Vec<(String, Vec<u8>)> = parts
                            .headers
                            .iter()
                            .filter(|(n, _)| *n != "date")
                            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                            .collect();
                        headers.sort();
                        Some(Outcome::Answered {
                            status: parts.status.as_u16(),
                            headers,
                            body: body.to_vec(),
                        })
                    })));
                }
                None => waiting.push(None),
            }
        }
        let mut outcomes = Vec::new();
        for handle in waiting {
            outcomes.push(match handle {
                None => Outcome::NotSent,
                Some(handle) => match tokio::time::timeout(Duration::from_secs(5), handle).await {
                    Ok(Ok(Some(outcome))) => outcome,
                    Ok(Ok(None)) => Outcome::Failed,
                    Ok(Err(e)) => panic!("client task panicked: {e}"),
                    Err(_) => panic!("a request hung (in_task = {in_task})"),
                },
            });
        }
        outcomes
    })
}

fuzz_target!(|batch: Batch| {
    let reference = run(&batch, false);
    let ours = run(&batch, true);
    assert_eq!(
        ours, reference,
        "in-task streams differ from hyper's reference for {batch:?}"
    );
});
