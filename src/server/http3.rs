//! HTTP/3: QUIC on UDP at `listen.https`'s address (quinn), HTTP/3 framing
//! and QPACK by h3. Each request goes through the same [`Proxy::handle`] as
//! HTTP/1.1 and HTTP/2; only the transport differs. The QUIC configuration
//! is part of each generation, so a reload (SIGHUP, certificate files,
//! ACME) applies to the next QUIC connection.
//!
//! [`Proxy::handle`]: crate::proxy::Proxy::handle

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{HeaderName, CONNECTION, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::clock::monotonic_millis;
use crate::connection::Connection;
use crate::proxy::error_response;
use crate::telemetry::Telemetry;
use crate::upstream::BoxError;

use super::state::{reached, Phase, Server};

/// Above this many handshakes in progress, a client must prove its
/// address first (a QUIC Retry round trip): a flood of Initial packets
/// from spoofed addresses then costs a token, not a handshake.
const RETRY_ABOVE_HANDSHAKES: usize = 64;
/// HTTP/3's "no error" application error code (RFC 9114 §8.1).
const H3_NO_ERROR: u32 = 0x100;
/// The longest wait for a GOAWAY to be written and to leave.
const GOAWAY_SEND: Duration = Duration::from_millis(200);
/// How often a connection's idle deadline is looked at.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// `Alt-Svc` for HTTP/1.1 and HTTP/2 responses: HTTP/3 on the public port.
pub(super) fn alt_svc(public_port: u16) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("h3=\":{public_port}\"; ma=86400"))
        .expect("a port number is a valid header value")
}

/// Accepts QUIC connections until shutdown; each is served in its own task.
pub(super) async fn accept_quic(
    endpoint: quinn::Endpoint,
    server: Arc<Server>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<Phase>,
) {
    let handshaking = Arc::new(AtomicUsize::new(0));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            _ = reached(&mut shutdown, Phase::Draining) => {
                // New connections are refused from here on (CONNECTION_REFUSED).
                endpoint.set_server_config(None);
                return;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            server.telemetry.metrics.count_limit("connections");
            incoming.refuse();
            continue;
        };
        if handshaking.load(Ordering::Relaxed) >= RETRY_ABOVE_HANDSHAKES
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            let _ = incoming.retry();
            continue;
        }
        let generation = server.current();
        let Some(setup) = generation.quic.as_ref() else {
            incoming.refuse();
            continue;
        };
        let (config, chosen) = match setup.for_connection() {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!("HTTP/3 connection refused: {e}");
                incoming.refuse();
                continue;
            }
        };
        let peer = incoming.remote_address();
        let local = SocketAddr::new(
            incoming
                .local_ip()
                .unwrap_or(endpoint.local_addr().map_or([0, 0, 0, 0].into(), |a| a.ip())),
            endpoint.local_addr().map_or(0, |a| a.port()),
        );
        let connecting = match incoming.accept_with(config) {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(%peer, "QUIC connection failed: {e}");
                continue;
            }
        };
        let opened = Opened {
            peer,
            local,
            chosen,
            _permit: permit,
        };
        // Counted here, not in the connection's task: a burst of Initials
        // cannot get past the threshold before those tasks have run.
        handshaking.fetch_add(1, Ordering::Relaxed);
        let in_handshake = Handshaking(handshaking.clone());
        server.tracker.spawn(serve_quic(
            connecting,
            opened,
            server.clone(),
            in_handshake,
            shutdown.clone(),
        ));
    }
}

/// What is known of a QUIC connection before its handshake ends.
struct Opened {
    peer: SocketAddr,
    local: SocketAddr,
    chosen: Arc<OnceLock<&'static str>>,
    /// Held for the connection's life: `limits.max_connections` counts QUIC.
    _permit: OwnedSemaphorePermit,
}

/// Counts an open QUIC connection for as long as it lives.
struct OpenQuic(Arc<Telemetry>);

impl OpenQuic {
    fn new(telemetry: &Arc<Telemetry>) -> Self {
        telemetry.metrics.open_connections.inc();
        telemetry.metrics.open_quic_connections.inc();
        OpenQuic(telemetry.clone())
    }
}

impl Drop for OpenQuic {
    fn drop(&mut self) {
        self.0.metrics.open_connections.dec();
        self.0.metrics.open_quic_connections.dec();
    }
}

/// Decrements the handshakes-in-progress count when the handshake ends.
struct Handshaking(Arc<AtomicUsize>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One QUIC connection: the handshake within `limits.handshake_timeout`,
/// then its HTTP/3 requests until the client leaves, it idles for
/// `limits.idle_timeout`, or shutdown sends GOAWAY and its requests end.
async fn serve_quic(
    connecting: quinn::Connecting,
    opened: Opened,
    server: Arc<Server>,
    in_handshake: Handshaking,
    mut shutdown: watch::Receiver<Phase>,
) {
    let _open = OpenQuic::new(&server.telemetry);
    let generation = server.current();
    let limits = generation.config.limits.clone();
    let early_data = generation.config.tls.early_data;
    let metrics = &server.telemetry.metrics;
    let handshake_deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let mut in_handshake = Some(in_handshake);
    // With 0-RTT on, the connection is served from the client's first flight
    // (on a server quinn's `into_0rtt` always succeeds, 0-RTT or not):
    // `pending` ends with the handshake, which is still in progress until
    // then (handshake_timeout, the Retry threshold); a request that comes
    // before its end is early data.
    let mut pending: Option<quinn::ZeroRttAccepted> = None;
    let connecting = if early_data {
        match connecting.into_0rtt() {
            Ok((connection, accepted)) => {
                pending = Some(accepted);
                Ok(connection)
            }
            Err(connecting) => Err(connecting),
        }
    } else {
        Err(connecting)
    };
    let connection = match connecting {
        Ok(connection) => Ok(connection),
        Err(connecting) => tokio::time::timeout_at(handshake_deadline, connecting)
            .await
            .unwrap_or(Err(quinn::ConnectionError::TimedOut)),
    };
    let connection = match connection {
        Ok(connection) => connection,
        Err(e) => {
            metrics.tls_handshake_failures.inc();
            tracing::debug!(peer = %opened.peer, "QUIC handshake failed: {e}");
            return;
        }
    };
    let key_exchange = opened.chosen.get().copied().unwrap_or("-");
    let handshake_done = |in_handshake: &mut Option<Handshaking>| {
        in_handshake.take();
        metrics.tls_handshakes.inc();
        metrics.count_key_exchange(key_exchange);
    };
    if pending.is_none() {
        handshake_done(&mut in_handshake);
    }
    let conn = Arc::new(Connection {
        tls_version: "TLSv1.3",
        key_exchange,
        ..Connection::new(opened.peer, opened.local)
    });

    let mut builder = h3::server::builder();
    builder.max_field_section_size(u64::try_from(limits.max_request_header_bytes).unwrap_or(u64::MAX));
    // Setting up HTTP/3 opens the control and QPACK streams, which a client
    // that grants no stream credit holds up: bounded like the handshake.
    let setup_deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let built = tokio::time::timeout_at(
        setup_deadline,
        builder.build(h3_quinn::Connection::new(connection.clone())),
    );
    let mut h3conn: h3::server::Connection<h3_quinn::Connection, Bytes> = match built.await {
        Ok(Ok(h3conn)) => h3conn,
        Ok(Err(e)) => {
            tracing::debug!(peer = %opened.peer, "HTTP/3 connection setup failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %opened.peer, "HTTP/3 connection setup timed out");
            connection.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
            return;
        }
    };
    // The request tasks of this connection: shutdown waits for those it
    // accepted (not only those already in the proxy), and they end when the
    // connection does.
    let requests = tokio_util::task::TaskTracker::new();

    let mut going_away = false;
    let mut idle_check = tokio::time::interval(IDLE_CHECK);
    // Idle from here until the first request, then from each last response.
    let connected_at = monotonic_millis();
    loop {
        // Lame duck: clients are told (GOAWAY) to take their next request
        // elsewhere once this connection has served one; draining: at once.
        let phase = *shutdown.borrow();
        if !going_away && (phase >= Phase::Draining || (phase >= Phase::LameDuck && conn.requests.started() > 0)) {
            going_away = true;
            // GOAWAY names the first request stream not served: every
            // request already accepted is answered (RFC 9114 §5.2).
            let _ = tokio::time::timeout(GOAWAY_SEND, h3conn.shutdown(1)).await;
        }
        if going_away && requests.is_empty() {
            // Time for the GOAWAY to leave: quinn drops unsent stream data
            // on close.
            tokio::time::sleep((connection.rtt() * 2).min(GOAWAY_SEND)).await;
            break;
        }
        tokio::select! {
            biased;
            // A 0-RTT connection's handshake has ended, or failed.
            _ = std::future::poll_fn(|cx| poll_handshake(&mut pending, cx)), if in_handshake.is_some() => {
                if connection.close_reason().is_some() {
                    metrics.tls_handshake_failures.inc();
                    break;
                }
                handshake_done(&mut in_handshake);
            }
            _ = tokio::time::sleep_until(handshake_deadline), if in_handshake.is_some() => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(peer = %opened.peer, "QUIC handshake failed: timed out");
                break;
            }
            accepted = h3conn.accept(), if !going_away => match accepted {
                Ok(Some(resolver)) => {
                    // Judged here, in this task, once quinn has handed the
                    // stream over: its driver sends the handshake's end before
                    // it releases the data that came after the client's
                    // Finished, so such a request is never taken for early
                    // data. (Unconstrained: a spent coop budget must not make
                    // the handshake look unfinished.)
                    let early = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
                        Poll::Ready(poll_handshake(&mut pending, cx).is_pending())
                    }))
                    .await;
                    let for_request = server.clone();
                    let conn = conn.clone();
                    let quic = connection.clone();
                    let head_timeout = limits.header_read_timeout;
                    let request = async move {
                        let resolved = tokio::time::timeout(head_timeout, resolver.resolve_request()).await;
                        if let Ok(Ok((head, stream))) = resolved {
                            serve_request(head, stream, &for_request, &conn, early).await;
                        }
                    };
                    // A request ends with its connection: a client that
                    // closes must not leave the app working for nobody.
                    server.tracker.spawn(requests.track_future(async move {
                        tokio::select! {
                            _ = request => {}
                            _ = quic.closed() => {}
                        }
                    }));
                }
                // The client closed, or the connection failed.
                Ok(None) | Err(_) => break,
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() == Phase::Abandon {
                    break;
                }
            }
            _ = idle_check.tick() => {
                let idle_since = conn.requests.last_done().max(connected_at);
                let idle = conn.requests.in_flight() == 0
                    && monotonic_millis().saturating_sub(idle_since) >= limits.idle_timeout.as_millis() as u64;
                if idle {
                    break;
                }
            }
            _ = connection.closed() => break,
        }
    }
    // H3_NO_ERROR: the requests it was given were answered.
    connection.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
}

/// Polls a 0-RTT connection's handshake; `None` once it has ended.
fn poll_handshake(pending: &mut Option<quinn::ZeroRttAccepted>, cx: &mut Context<'_>) -> Poll<()> {
    let Some(accepted) = pending.as_mut() else {
        return Poll::Ready(());
    };
    match Pin::new(accepted).poll(cx) {
        Poll::Ready(_) => {
            *pending = None;
            Poll::Ready(())
        }
        Poll::Pending => Poll::Pending,
    }
}

/// One HTTP/3 request: through the proxy, and its response back on the stream.
async fn serve_request(
    head: Request<()>,
    stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    server: &Arc<Server>,
    conn: &Arc<Connection>,
    early: bool,
) {
    let (mut send, recv) = stream.split();
    let (mut parts, ()) = head.into_parts();
    parts.version = Version::HTTP_3;
    // One generation for the whole request, as on TCP.
    let generation = server.current();
    let response = if early && !is_idempotent(&parts.method) {
        // RFC 8470: a request that is not safe to replay waits for the
        // handshake; the client sends it again after it.
        error_response(StatusCode::TOO_EARLY, "425 Too Early")
    } else {
        if early {
            // RFC 8470 section 5.1: forwarded before the handshake completed.
            parts.headers.insert(
                HeaderName::from_static("early-data"),
                http::HeaderValue::from_static("1"),
            );
        }
        let body = RequestBody::new(recv, &parts.headers, &parts.method);
        generation.proxy.handle(Request::from_parts(parts, body), conn).await
    };
    let (mut parts, mut body) = response.into_parts();
    strip_connection_headers(&mut parts.headers);
    // Every write within limits.send_timeout, as on TCP: a client that stops
    // granting flow-control credit must not hold the app's response (and
    // its upstream connection) for ever.
    let send_timeout = generation.config.limits.send_timeout;
    let head = Response::from_parts(parts, ());
    if !within(send_timeout, send.send_response(head)).await {
        send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        return;
    }
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) if data.is_empty() => true,
                Ok(data) => within(send_timeout, send.send_data(data)).await,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => within(send_timeout, send.send_trailers(trailers)).await,
                    Err(_) => true,
                },
            },
            Err(_) => {
                // The app's body failed midway: the client must not take a
                // cut-off body for a whole one.
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if !sent {
            send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            return;
        }
    }
    let _ = within(send_timeout, send.finish()).await;
}

/// Whether a write finished, without error, within `limit`.
async fn within<E>(limit: Duration, write: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
}

/// RFC 9110 §9.2.2 idempotent methods: safe to receive as 0-RTT data.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// HTTP/3 forbids connection-specific header fields (RFC 9114 §4.2).
fn strip_connection_headers(headers: &mut HeaderMap) {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    for name in [
        &CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
}

/// An HTTP/3 request body, as an [`http_body::Body`](hyper::body::Body).
///
/// Its DATA frames only: request trailers are not forwarded (no browser
/// sends them, and reading them after a stream that ended inside a DATA
/// frame trips an assertion in h3 0.0.8). A body that does not match its
/// `Content-Length` is an error (RFC 9114 §4.1.2: malformed), so the app
/// never takes a cut-off or padded body for the one announced.
struct RequestBody {
    stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
    /// Nothing more will come (no body, or the stream ended).
    ended: bool,
    /// A frame (or the error) read ahead by [`RequestBody::look_ahead`],
    /// not yet passed on.
    first: Option<Result<Frame<Bytes>, BoxError>>,
    /// `Content-Length`, when given.
    length: Option<u64>,
    /// Bytes received so far.
    received: u64,
}

impl RequestBody {
    /// HTTP/3 has no flag on the HEADERS frame that says "no body" as
    /// HTTP/2 has: a bodiless request is one whose stream has already
    /// ended (the usual case: FIN comes with the headers), says
    /// `Content-Length: 0`, or is a GET, HEAD or OPTIONS without a
    /// `Content-Length` (whose body has no meaning; RFC 9110 §9.3.1).
    fn new(
        stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
        headers: &HeaderMap,
        method: &Method,
    ) -> Self {
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bodiless_method = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && length.is_none();
        let mut body = RequestBody {
            stream,
            ended: length == Some(0) || bodiless_method,
            first: None,
            length,
            received: 0,
        };
        if !body.ended {
            body.look_ahead();
        }
        body
    }

    /// Reads what is already here without waiting (the waker of this one
    /// poll is never needed: the body polls again, for real): a stream that
    /// has already ended has no body; data already here is kept.
    fn look_ahead(&mut self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_recv_data(&mut cx) {
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                self.first = Some(self.counted(bytes));
            }
            Poll::Ready(Ok(None)) => {
                if self.length.is_some_and(|n| n != 0) {
                    self.first = Some(Err(short_body()));
                }
                self.ended = true;
            }
            Poll::Ready(Err(_)) | Poll::Pending => {}
        }
    }

    /// A DATA frame's bytes, or the error when they pass `Content-Length`.
    fn counted(&mut self, bytes: Bytes) -> Result<Frame<Bytes>, BoxError> {
        self.received += bytes.len() as u64;
        match self.length {
            Some(n) if self.received > n => {
                self.ended = true;
                Err("the request body is longer than its Content-Length".into())
            }
            _ => Ok(Frame::data(bytes)),
        }
    }
}

fn short_body() -> BoxError {
    "the request body ended before its Content-Length".into()
}

// No `Drop` that calls `stop_sending`: h3-quinn 0.0.10 unwraps the stream
// there, which a read in progress has taken (a panic). Dropping the stream
// sends STOP_SENDING itself (code 0).

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match self.stream.poll_recv_data(cx) {
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                Poll::Ready(Some(self.counted(bytes)))
            }
            Poll::Ready(Ok(None)) => {
                self.ended = true;
                if self.length.is_some_and(|n| n != self.received) {
                    return Poll::Ready(Some(Err(short_body())));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.ended = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.is_end_stream(), self.length) {
            (true, _) => SizeHint::with_exact(0),
            (false, Some(n)) => SizeHint::with_exact(n.saturating_sub(self.received)),
            (false, None) => SizeHint::default(),
        }
    }
}
