//! A real HTTP/1.1 upstream on loopback, with the behaviours the proxy
//! tests need: echo, cookies, redirects, slowness, big and streamed bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// Response body type of the test upstream.
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A running test upstream.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Released by a test to let `/sse` send its second event.
    pub sse_gate: Arc<Notify>,
    /// Notified when a `/slow` request arrives (a test waits for it instead
    /// of sleeping).
    pub slow_started: Arc<Notify>,
}

/// `n` bytes of `b'x'` in 64 KiB frames, produced on demand.
struct Repeat {
    remaining: u64,
    chunk: Bytes,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// A body fed by a channel: each message is sent as it arrives.
struct Channel(mpsc::Receiver<Bytes>);

impl Body for Channel {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn text(status: StatusCode, body: String) -> Response<TestBody> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r
}

impl Upstream {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sse_gate = Arc::new(Notify::new());
        let slow_started = Arc::new(Notify::new());
        let gate = sse_gate.clone();
        let slow = slow_started.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let gate = gate.clone();
                let slow = slow.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, addr, gate.clone(), slow.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            sse_gate,
            slow_started,
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    own: SocketAddr,
    gate: Arc<Notify>,
    slow_started: Arc<Notify>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/cookies" => {
            let mut r = text(StatusCode::OK, "cookies\n".into());
            for c in [
                "session=abc123; Path=/",
                "prefs=\"a;b\"; Expires=Thu, 01 Jan 2037 00:00:00 GMT; Path=/",
                "csrftoken=tok; Path=/; SameSite=Lax",
                "done=1; Secure; HttpOnly",
            ] {
                r.headers_mut().append("set-cookie", c.parse().unwrap());
            }
            r
        }
        "/redirect" => {
            let mut r = text(StatusCode::FOUND, String::new());
            r.headers_mut()
                .insert("location", format!("http://{own}/next?a=1").parse().unwrap());
            r.headers_mut()
                .insert("refresh", format!("0; url=http://{own}/later").parse().unwrap());
            r.headers_mut().insert("content-location", "/relative".parse().unwrap());
            r
        }
        "/redirect-elsewhere" => {
            let mut r = text(StatusCode::FOUND, String::new());
            r.headers_mut()
                .insert("location", "https://accounts.example.com/login".parse().unwrap());
            r
        }
        "/slow" => {
            slow_started.notify_one();
            tokio::time::sleep(Duration::from_secs(5)).await;
            text(StatusCode::OK, "slow\n".into())
        }
        "/hop" => {
            let mut r = text(StatusCode::OK, "hop\n".into());
            let h = r.headers_mut();
            h.insert("connection", "X-Internal".parse().unwrap());
            h.insert("x-internal", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-authenticate", "Basic".parse().unwrap());
            h.insert("x-public", "yes".parse().unwrap());
            r
        }
        "/download" => {
            let n: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut r = Response::new(
                Repeat {
                    remaining: n,
                    chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                }
                .boxed(),
            );
            r.headers_mut().insert("content-length", n.into());
            r
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("body error: {e}\n"))),
                }
            }
            text(StatusCode::OK, format!("{total}\n"))
        }
        "/ws" => {
            // A 101 and then a raw echo of whatever the client sends.
            let upgrade = hyper::upgrade::on(req);
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut r = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
            r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
            r.headers_mut().insert("connection", "Upgrade".parse().unwrap());
            r.headers_mut()
                .insert("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap());
            r
        }
        "/sse" => {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: first\n\n")).await;
                gate.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: second\n\n")).await;
            });
            let mut r = Response::new(Channel(rx).boxed());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        _ => {
            // Echo: request line, headers in order, body size.
            let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (n, v) in req.headers() {
                out.push_str(&format!("{}: {}\n", n, String::from_utf8_lossy(v.as_bytes())));
            }
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            out.push_str(&format!("x-echo-upstream: {own}\n"));
            out.push_str(&format!("x-echo-body-bytes: {body}\n"));
            text(StatusCode::OK, out)
        }
    };
    Ok(resp)
}
