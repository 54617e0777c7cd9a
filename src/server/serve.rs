//! Serving one TLS connection: HTTP/1.1 or HTTP/2 by ALPN, the idle and
//! first-request deadlines, parking an idle HTTP/1.1 connection, and the
//! lingering close.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::clock::monotonic_millis;
use crate::connection::Connection;
use crate::park::{self, Parking, ParkingStream, Returned, PARK_AFTER};
use crate::upstream::ProxyBody;

use super::handshake::{answer_plain_http_on_tls_port, handshake, Accepted, OpenConnection};
use super::state::{next_phase, reached, Phase, Server};
use super::streams::WithStreams;

pub(super) async fn serve_tls(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    server: Arc<Server>,
    shutdown: watch::Receiver<Phase>,
) {
    let generation = server.current();
    let limits = &generation.config.limits;
    server.telemetry.metrics.open_connections.inc();
    let _open = OpenConnection(&server.telemetry);
    let _ = stream.set_nodelay(true);

    // Behind an L4 balancer the client is whom the PROXY header names.
    let mut peer = peer;
    if let Some(gate) = &generation.proxy_protocol {
        match gate.admit(&mut stream, peer, &server.telemetry).await {
            Some(client) => peer = client,
            None => return,
        }
    }

    // A TLS connection starts with a handshake record (0x16); anything else is
    // most likely plain HTTP sent to the https port, which deserves an answer.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.handshake_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => return answer_plain_http_on_tls_port(stream, local).await,
        _ => return,
    }
    let handshake = handshake(
        &generation.acceptor,
        generation.client_sites.as_deref(),
        stream,
        &server.telemetry,
        peer,
        limits.handshake_timeout,
    );
    // Bound field by field: a whole `Accepted` local would keep its slot
    // while its copied fields are still readable.
    let Some(Accepted {
        tls,
        speaks_h2,
        acme_validation,
        tls_version,
        key_exchange,
        client_cert,
        client_site,
    }) = handshake.await
    else {
        return;
    };
    if acme_validation {
        let mut tls = tls;
        let _ = tls.shutdown().await;
        return;
    }
    // HTTP/3 carries no client certificates: a site that asks for them is
    // not advertised there.
    let advertise_h3 = client_site
        .as_ref()
        .is_none_or(|s| s.auth == crate::config::ClientAuth::None);
    let conn = Arc::new(Connection {
        tls_version,
        key_exchange,
        client_cert,
        client_site,
        ..Connection::new(peer, local)
    });
    let service = {
        let server = server.clone();
        let conn = conn.clone();
        service_fn(move |req: Request<Incoming>| {
            // Each request takes the newest generation: a reload applies to
            // the next request even on a kept-alive connection.
            let generation = server.current();
            let conn = conn.clone();
            // Shutting down (the lame duck delay included): an HTTP/1.1
            // client is told to reconnect for its next request, which the
            // balancer then sends to another replica. Read when the request
            // comes: one that began before SIGTERM keeps its keep-alive.
            let close_after = !speaks_h2 && server.is_shutting_down();
            let alt_svc = server.alt_svc.clone().filter(|_| advertise_h3);
            // Boxed: hyper keeps an HTTP/1.1 connection's request-future slot
            // for the connection's whole life and moves an HTTP/2 stream's
            // future into a boxed stream (see `streams`); a pointer is cheaper to hold
            // idle and to move than the request's multi-KiB state.
            let handling: Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> = Box::pin(async move {
                let mut response = generation.proxy.handle(req, &conn).await;
                // Not on a 421: the request was for another site, which may
                // be one HTTP/3 cannot serve (client certificates).
                if let Some(alt_svc) = alt_svc.filter(|_| response.status() != http::StatusCode::MISDIRECTED_REQUEST) {
                    response.headers_mut().entry(http::header::ALT_SVC).or_insert(alt_svc);
                }
                // An upgrade's 101 keeps its `Connection: upgrade`.
                if close_after && response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                response
            });
            async move { Ok::<_, Infallible>(handling.await) }
        })
    };
    let deadlines = Deadlines {
        first_request: limits.header_read_timeout,
        idle: limits.idle_timeout,
        send: limits.send_timeout,
    };
    // hyper reads and writes through a `ParkingStream`, which hands the TLS
    // stream back when hyper lets go of it: to park an idle HTTP/1.1
    // connection without hyper's buffers (see `park`), or to close it the
    // lingering way (see `linger`).
    let parking = Arc::new(Parking::new(!speaks_h2, conn.clone()));
    let mut shutdown = shutdown;
    let mut stream = tls;
    loop {
        let io = TokioIo::new(ParkingStream::new(stream, parking.clone()));
        let ended = if speaks_h2 {
            // Boxed so that an HTTP/1.1 connection's task is not sized for HTTP/2's state.
            let mut connection = WithStreams::new(Box::pin(generation.http2.serve_connection(io, service.clone())));
            drive(
                Pin::new(&mut connection),
                |c| c.get_mut().connection().graceful_shutdown(),
                &server,
                &conn,
                deadlines,
                shutdown.clone(),
                &parking,
            )
            .await
        } else {
            let connection = server
                .current()
                .http1
                .serve_connection(io, service.clone())
                .with_upgrades();
            tokio::pin!(connection);
            drive(
                connection.as_mut(),
                |c| c.graceful_shutdown(),
                &server,
                &conn,
                deadlines,
                shutdown.clone(),
                &parking,
            )
            .await
        };
        // hyper's connection is gone; its stream is back unless an upgrade took it.
        let Some(Returned { stream: back, parked }) = parking.take() else {
            break;
        };
        // hyper saw the made-up end of stream inside a message (which the
        // parking conditions exclude): its buffers are gone, so whatever
        // they held is lost; the connection is closed, never parked.
        let parked = parked && ended == Ended::Normally;
        if !parked {
            // After hyper's own error answers (its 431 for a head past its
            // buffer), and after an HTTP/1.1 answer given before the
            // request's body was read (tlsfront's own 413, an app that
            // refused an upload early): the client may still be sending, and
            // closing with its bytes unread would reset the connection under
            // the answer. (Lingered here, not after the loop: a stream
            // carried out of the loop would keep a slot in every connection's
            // task.)
            if ended == Ended::WithError || (!speaks_h2 && conn.requests.body_left_unread()) {
                // Boxed: rare, and inline it would size every connection's task.
                Box::pin(linger(back)).await;
            }
            break;
        }
        park::freed();
        let metrics = &server.telemetry.metrics;
        metrics.parked_connections.inc();
        // One await with the stream borrowed (the close is inside): a stream
        // borrowed across two would keep a slot in every connection's task.
        let mut back = back;
        let woken = wait_parked(&mut back, &parking, deadlines, &mut shutdown).await;
        metrics.parked_connections.dec();
        if !woken {
            break;
        }
        stream = back;
    }
}

/// A parked connection waits for its client's next bytes (true), or is
/// closed (false): idle for `idle_timeout` since its last response, or
/// tlsfront shutting down. (The bytes that wake it start the next head,
/// which `header_read_timeout` bounds from then on.)
pub(super) async fn wait_parked(
    stream: &mut tokio_rustls::server::TlsStream<TcpStream>,
    parking: &Parking,
    deadlines: Deadlines,
    shutdown: &mut watch::Receiver<Phase>,
) -> bool {
    let keep = deadlines.idle;
    let answered = parking.answered();
    let waited = Duration::from_millis(monotonic_millis().saturating_sub(answered));
    let woken = match keep.checked_sub(waited) {
        Some(left) => tokio::select! {
            ready = stream.get_ref().0.readable() => ready.is_ok(),
            _ = reached(shutdown, Phase::Draining) => false,
            _ = tokio::time::sleep(left) => false,
        },
        None => false,
    };
    if !woken {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    woken
}

/// How serving a connection ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// Closed by either side, idle, or shut down.
    Normally,
    /// hyper gave up on it with an error.
    WithError,
}

/// After an error, or an answer given before the request body was read:
/// send what rustls still holds, stop sending, read and discard what the
/// client still sends (up to 1 MiB, 2 s), then close. nginx's lingering
/// close: the client sees the answer and an end of stream instead of a reset.
pub(super) async fn linger(mut tls: tokio_rustls::server::TlsStream<TcpStream>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.flush()).await;
    let (mut socket, _) = tls.into_inner();
    if socket.shutdown().await.is_err() {
        return;
    }
    // On the heap: an array here would be part of every connection's task.
    let mut sink = vec![0u8; 8192];
    let drain = async {
        let mut total = 0usize;
        while total < (1 << 20) {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Why a connection that never sent a whole request head in time is closed.
const NO_FIRST_REQUEST: &str = "no request within limits.header_read_timeout";
const HEAD_TOO_SLOW: &str = "request head not complete within limits.header_read_timeout";

/// How often a draining connection looks whether its first request began.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

/// When an open connection is closed for lack of requests.
#[derive(Clone, Copy)]
pub(super) struct Deadlines {
    first_request: Duration,
    idle: Duration,
    /// `limits.send_timeout`: a client that takes none of the bytes waiting
    /// for it for this long is dropped.
    send: Duration,
}

/// Serves a connection to its end, closing it when it stays without requests
/// too long or when tlsfront shuts down (what is in flight finishes first).
pub(super) async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    server: &Server,
    conn: &Connection,
    deadlines: Deadlines,
    mut shutdown: watch::Receiver<Phase>,
    stream: &Parking,
) -> Ended
where
    C: Future<Output = Result<(), E>> + ?Sized,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Deadlines by requests, not bytes: a client trickling a request (or an
    // HTTP/2 preface, which hyper's header timer does not cover) a byte at a
    // time is neither active nor allowed to hold its slot.
    let Deadlines {
        first_request,
        idle,
        send,
    } = deadlines;
    let may_park = stream.parks();
    let opened = monotonic_millis();
    let first_check = first_request.min(idle);
    let first_check = if may_park {
        first_check.min(PARK_AFTER)
    } else {
        first_check
    };
    let mut check_at = tokio::time::Instant::now() + first_check;
    // Shutting down, but a request is on its way: (requests started when the
    // drain began, since when it has been coming).
    let mut draining: Option<(u64, u64)> = None;
    let mut goaway_sent = false;
    // Shutting down: an HTTP/2 connection gets its GOAWAY after its first request.
    let mut goaway_due = false;
    let closing = loop {
        tokio::select! {
            res = connection.as_mut() => {
                if let Err(e) = res {
                    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                    // hyper answered 431 itself: the head outgrew its read buffer.
                    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse_too_large) {
                        server.telemetry.metrics.count_limit("header_bytes");
                    }
                    tracing::debug!("connection ended with an error: {e}");
                    return Ended::WithError;
                }
                return Ended::Normally;
            }
            phase = next_phase(&mut shutdown) => {
                match phase {
                    Phase::Abandon => return Ended::Normally,
                    Phase::Serving => continue,
                    Phase::LameDuck => {
                        // HTTP/2: a GOAWAY, once the connection has had its
                        // first request (one on its way would be refused);
                        // the streams in flight finish, new ones come on a
                        // new connection. (HTTP/1.1 says `Connection: close`
                        // on its next response instead: closing an idle one
                        // now would race its next request.)
                        if !may_park {
                            goaway_due = true;
                            check_at = tokio::time::Instant::now();
                        }
                        continue;
                    }
                    Phase::Draining => {}
                }
                // A connection that has started no request yet, or whose
                // next head is coming in, was accepted before the listener
                // closed: its request is on its way (a balancer that had
                // not noticed the drain yet sent it), so it is served
                // before the connection closes, within header_read_timeout.
                let requests = &conn.requests;
                let answered = stream.answered();
                let on_its_way = if requests.started() == 0 {
                    Some(opened)
                } else if requests.in_flight() == 0 && !stream.unflushed() {
                    requests.head_since(answered)
                } else {
                    None
                };
                match on_its_way {
                    Some(since) => {
                        draining = Some((requests.started(), since));
                        check_at = tokio::time::Instant::now();
                        continue;
                    }
                    None => break None,
                }
            }
            _ = tokio::time::sleep_until(check_at) => {
                let now = monotonic_millis();
                let requests = &conn.requests;
                if goaway_due && !goaway_sent && requests.started() > 0 {
                    graceful_shutdown(connection.as_mut());
                    goaway_sent = true;
                }
                if let Some((started, since)) = draining {
                    // Its request began (graceful shutdown lets it finish),
                    // or none came within header_read_timeout.
                    let waited = Duration::from_millis(now.saturating_sub(since));
                    if requests.started() > started || waited >= first_request {
                        break None;
                    }
                    check_at = tokio::time::Instant::now() + DRAIN_CHECK;
                    continue;
                }
                // A client that takes none of what waits for it (a response,
                // or a GOAWAY) would hold the connection, and the app's
                // worker behind it, for ever.
                let blocked = stream.blocked_since();
                let send_left = if blocked == 0 {
                    Duration::MAX
                } else {
                    send.saturating_sub(Duration::from_millis(now.saturating_sub(blocked)))
                };
                if send_left.is_zero() {
                    break Some("the client took no bytes for limits.send_timeout");
                }
                // A response is over when its last bytes are out of hyper's
                // and rustls' buffers, not when its body was handed over.
                let busy = requests.in_flight() > 0 || stream.unflushed();
                let answered = stream.answered();
                // `between`: an HTTP/1.1 connection idle between requests,
                // the one kind that parks.
                let (since, limit, why, between) = if requests.started() == 0 {
                    (opened, first_request, NO_FIRST_REQUEST, false)
                } else if !busy {
                    if may_park && !requests.body_left_unread() {
                        // HTTP/1.1 between requests: idle_timeout from the
                        // last response; header_read_timeout from the first
                        // byte of the next head (hyper's own header timer is
                        // off: it would run from the last response).
                        match requests.head_since(answered) {
                            Some(head) => (
                                head,
                                first_request,
                                HEAD_TOO_SLOW,
                                false,
                            ),
                            None => (answered, idle, "idle for limits.idle_timeout", true),
                        }
                    } else {
                        (answered, idle, "idle for limits.idle_timeout", false)
                    }
                } else {
                    let next = if may_park { PARK_AFTER } else { idle };
                    check_at = tokio::time::Instant::now() + next.min(send_left);
                    continue;
                };
                let waited = Duration::from_millis(now.saturating_sub(since));
                if waited >= limit {
                    break Some(why);
                }
                let mut next = (limit - waited).min(send_left);
                if may_park {
                    // Checked at least every PARK_AFTER. Parking is for a
                    // kept-alive connection between requests; asked here,
                    // done by its next read that would wait (the select
                    // polls the connection again right away).
                    next = next.min(PARK_AFTER);
                    // Not while the client may still be sending the last
                    // request's body (answered before it was read): a
                    // blank line inside a body is no message boundary.
                    if between {
                        if waited < PARK_AFTER {
                            next = next.min(PARK_AFTER - waited);
                        } else if stream.between_messages() {
                            stream.request();
                        }
                    }
                }
                if goaway_due && !goaway_sent {
                    next = next.min(DRAIN_CHECK);
                }
                check_at = tokio::time::Instant::now() + next;
            }
        }
    };
    // Shutdown or idle: finish what is in flight, accept nothing new. An idle
    // peer that does not let go within a second is dropped.
    if !goaway_sent {
        graceful_shutdown(connection.as_mut());
    }
    match closing {
        None => {
            // A second signal on the channel is shutdown_timeout running out:
            // the connection is dropped here, in its own task, so a request
            // still in flight gets no answer at all (never a 502 made up
            // while the runtime tears the upstream side down).
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = reached(&mut shutdown, Phase::Abandon) => {}
            }
        }
        Some(why) => {
            tracing::debug!(peer = %conn.peer, "closing connection: {why}");
            // A head that did not arrive in time: closed now. hyper holds a
            // connection that is reading a head as busy, and its graceful
            // shutdown would wait for the rest of it.
            if why == HEAD_TOO_SLOW || why == NO_FIRST_REQUEST {
                return Ended::Normally;
            }
            // Nothing is in flight: a GOAWAY is a courtesy, not worth waiting for.
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        }
    }
    Ended::Normally
}
