//! Hostile input, sent as raw bytes over TLS: request smuggling, protocol
//! abuse, HTTP/2 frame abuse, and upstream faults. Each test asserts what the
//! client got and that the upstream saw nothing it should not.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2raw::{frame, get_localhost, literal, PREFACE};
use common::raw_upstream::{Behaviour, RawUpstream};
use common::{get, tls_stream, Client, Proxy};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the proxy may take to answer, or to close, before a test calls
/// it a hang.
const BOUND: Duration = Duration::from_secs(5);

/// What the proxy did with bytes sent on a fresh HTTP/1.1 connection.
struct Reply {
    /// The first response, head and body (empty when none came).
    text: String,
    /// Its status (0 when no response came).
    status: u16,
    /// The proxy closed the connection (EOF or reset) after it.
    closed: bool,
    conn: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (closed: {})", self.text, self.closed)
    }
}

impl Reply {
    /// Whether the proxy ends the connection within [`BOUND`] (without
    /// sending anything more).
    async fn ends(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        self.closed = self.closed
            || matches!(
                tokio::time::timeout(BOUND, self.conn.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            );
        self.closed
    }
}

/// Sends `bytes` over a fresh TLS connection (HTTP/1.1) and reads the first
/// response, by its Content-Length. A response saying `connection: close`
/// must be followed by the end of the connection. Silence is a failure:
/// neither a response nor a close within [`BOUND`] panics.
async fn exchange(proxy: &Proxy, bytes: &[u8]) -> Reply {
    let mut tls = tls_stream(proxy, &[b"http/1.1"]).await;
    // The proxy may answer and close before it has read everything.
    let _ = tls.write_all(bytes).await;
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut closed = false;
    let mut complete = None;
    while complete.is_none() {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "neither a complete response nor a close within {BOUND:?}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
        complete = response_len(&out);
    }
    let text = String::from_utf8_lossy(&out[..complete.unwrap_or(out.len())]).into_owned();
    if complete.is_some() && text.to_ascii_lowercase().contains("\r\nconnection: close\r\n") {
        loop {
            match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("said `connection: close` but kept the connection open: {text:?}"),
            }
        }
        closed = true;
    }
    Reply {
        status: status_of(&text),
        text,
        closed,
        conn: tls,
    }
}

/// The length of the first response in `out` once it is complete (head plus
/// Content-Length bytes of body).
fn response_len(out: &[u8]) -> Option<usize> {
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (out.len() >= head_end + length).then_some(head_end + length)
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn setup() -> (RawUpstream, Proxy) {
    let up = RawUpstream::start(Behaviour::Ok).await;
    let proxy = Proxy::start("", up.addr);
    (up, proxy)
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let (up, proxy) = setup().await;
    let attack = b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let got = exchange(&proxy, attack).await;
    // Refused, or answered once as chunked; either way the connection then
    // ends (RFC 9112 6.1), so the bytes after the chunked body are never read.
    assert!(matches!(got.status, 200 | 400), "{got:?}");
    assert!(got.closed, "the connection must close after a CL+TE request: {got:?}");
    let seen = up.all_text().to_ascii_lowercase();
    assert!(
        !seen.contains("/smuggled"),
        "smuggled request reached the upstream:\n{seen}"
    );
    assert!(up.requests() <= 1, "{seen}");
    for head in seen.split("\r\n\r\n") {
        assert!(
            !(head.contains("content-length:") && head.contains("transfer-encoding:")),
            "the upstream got both framings:\n{head}"
        );
    }
}

#[tokio::test]
async fn malformed_heads_are_refused_and_never_forwarded() {
    let (up, proxy) = setup().await;
    // (case, bytes, the status it gets). Heads hyper cannot parse get its 400
    // and a closed connection; heads tlsfront refuses get its own answer.
    let cases: &[(&str, &[u8], u16)] = &[
        (
            "duplicate Content-Length",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n folded\r\n\r\n",
            400,
        ),
        (
            "space in header name",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Name: x\r\n\r\n",
            400,
        ),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : localhost\r\n\r\n", 400),
        (
            "NUL in value",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n",
            400,
        ),
        (
            "CR in value",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n",
            400,
        ),
        (
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            400,
        ),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        (
            "bad Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            400,
        ),
        (
            "CONNECT",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
            405,
        ),
        (
            "a coding before chunked",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: identity, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            501,
        ),
        (
            "gzip then chunked, in two fields",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            501,
        ),
        ("garbage request line", b"\x16\x03\x01 nonsense\r\n\r\n", 400),
    ];
    for (name, bytes, status) in cases {
        let got = exchange(&proxy, bytes).await;
        assert_eq!(got.status, *status, "{name}: {got:?}");
    }
    assert_eq!(up.requests(), 0, "the upstream saw:\n{}", up.all_text());
    assert_eq!(up.all_text(), "", "the upstream saw bytes");
}

#[tokio::test]
async fn bad_chunked_bodies_never_complete_upstream() {
    let (up, proxy) = setup().await;
    let ext = format!(
        "POST /ext HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n",
        "a".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid chunk size",
            b"POST /bad HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "chunk size overflow",
            b"POST /big HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n"
                .to_vec(),
        ),
        ("oversize chunk extension", ext.into_bytes()),
    ];
    for (name, bytes) in cases {
        let mut got = exchange(&proxy, &bytes).await;
        // tlsfront's own 400 (not one relayed from the upstream), then the end.
        assert_eq!(got.status, 400, "{name}: {got:?}");
        assert!(
            got.text
                .ends_with("400 Bad Request: malformed or incomplete request body\n"),
            "{name}: {got:?}"
        );
        assert!(got.ends().await, "{name}: the connection must end after a broken body");
    }
    // The body streams, so the upstream may have seen a request head; it
    // must never have seen a whole request.
    let seen = up.all_text();
    assert!(!seen.contains("aaaaaaaaaa"), "chunk extensions must not be forwarded");
    assert!(
        !seen.contains("0\r\n\r\n"),
        "no broken body may reach the upstream complete:\n{seen}"
    );
}

#[tokio::test]
async fn bare_lf_is_never_forwarded_as_is() {
    let (up, proxy) = setup().await;
    let got = exchange(&proxy, b"GET /lf HTTP/1.1\nHost: localhost\nX-A: 1\n\n").await;
    // Accepted as lines (RFC 9112 2.2 allows it) or refused; never ignored.
    assert!(matches!(got.status, 200 | 400), "{got:?}");
    let seen = up.all_text();
    assert_eq!(up.requests(), usize::from(got.status == 200), "{seen}");
    assert!(
        !seen.replace("\r\n", "").contains('\n'),
        "a bare LF reached the upstream: {seen:?}"
    );
}

#[tokio::test]
async fn absolute_form_for_a_foreign_host_goes_only_to_the_upstream() {
    let (up, proxy) = setup().await;
    let got = exchange(
        &proxy,
        b"GET http://evil.example/x?y=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert!(got.text.ends_with("ok"), "the answer came from our upstream: {got:?}");
    let seen = up.all_text().to_ascii_lowercase();
    assert!(
        seen.starts_with("get /x?y=1 http/1.1\r\n"),
        "origin-form upstream: {seen}"
    );
    assert!(!seen.contains("http://evil.example"), "{seen}");
}

/// How an HTTP/2 exchange ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
enum H2End {
    /// RST_STREAM on the stream, with this error code.
    Reset(u32),
    /// GOAWAY with this error code, then the end of the connection.
    GoAway(u32),
    /// A response HEADERS on the stream; the first HPACK byte (`0x88` is
    /// `:status 200`, `0x8c` is `:status 400`).
    Response(u8),
    /// The connection ended without a GOAWAY.
    Closed,
}

const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Reads one server frame: (type, stream, payload); `None` at the end of the
/// connection. Silence for [`BOUND`] panics.
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    match tokio::time::timeout(BOUND, s.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return None,
        Err(_) => panic!("the server neither answered nor closed within {BOUND:?}"),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    match tokio::time::timeout(BOUND, s.read_exact(&mut payload)).await {
        Ok(Ok(_)) => Some((head[3], id, payload)),
        Ok(Err(_)) => None,
        Err(_) => panic!("a frame's payload did not arrive within {BOUND:?}"),
    }
}

fn code(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .map_or(u32::MAX, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads frames until `stream` is reset or answered, a GOAWAY (then waits,
/// bounded, for the close) or the end of the connection.
async fn h2_outcome<S: tokio::io::AsyncRead + Unpin>(s: &mut S, stream: u32) -> H2End {
    loop {
        let Some((kind, id, payload)) = read_frame(s).await else {
            return H2End::Closed;
        };
        match kind {
            7 => {
                while read_frame(s).await.is_some() {}
                return H2End::GoAway(code(&payload, 4));
            }
            3 if id == stream => return H2End::Reset(code(&payload, 0)),
            1 if id == stream => return H2End::Response(payload.first().copied().unwrap_or(0)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn http2_pseudo_header_abuse_is_refused() {
    let (up, proxy) = setup().await;
    let authority = literal(b":authority", b"localhost");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing :path", [vec![0x82, 0x87], authority.clone()].concat()),
        (
            "duplicate :method",
            [vec![0x82, 0x83, 0x87, 0x84], authority.clone()].concat(),
        ),
        (
            "pseudo-header after a regular one",
            [vec![0x82, 0x87], literal(b"x-a", b"1"), vec![0x84], authority.clone()].concat(),
        ),
        (
            "uppercase name",
            [vec![0x82, 0x87, 0x84], authority.clone(), literal(b"X-Upper", b"1")].concat(),
        ),
        (
            "connection-specific header",
            [
                vec![0x82, 0x87, 0x84],
                authority.clone(),
                literal(b"connection", b"keep-alive"),
            ]
            .concat(),
        ),
        (
            "unknown pseudo-header",
            [vec![0x82, 0x87, 0x84], authority.clone(), literal(b":evil", b"1")].concat(),
        ),
        (
            "empty :path",
            [vec![0x82, 0x87], literal(b":path", b""), authority.clone()].concat(),
        ),
        (
            "TE other than trailers",
            [vec![0x82, 0x87, 0x84], authority.clone(), literal(b"te", b"gzip")].concat(),
        ),
    ];
    for (name, block) in cases {
        let mut tls = tls_stream(&proxy, &[b"h2"]).await;
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(4, 0, 0, &[]));
        bytes.extend(frame(1, 0x5, 1, &block));
        tls.write_all(&bytes).await.unwrap();
        // A malformed request (RFC 9113 8.1.1): the stream or the connection
        // ends with PROTOCOL_ERROR, or a 400 answers it.
        let outcome = h2_outcome(&mut tls, 1).await;
        assert!(
            matches!(
                outcome,
                H2End::Reset(PROTOCOL_ERROR) | H2End::GoAway(PROTOCOL_ERROR) | H2End::Response(0x8c)
            ),
            "{name}: {outcome:?}"
        );
    }
    assert_eq!(up.all_text(), "", "the upstream saw something");
    // The same frames with a well-formed block are answered: the cases above
    // fail for what is wrong in them, not for how they are sent.
    let mut tls = tls_stream(&proxy, &[b"h2"]).await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    bytes.extend(frame(1, 0x5, 1, &get_localhost()));
    tls.write_all(&bytes).await.unwrap();
    assert_eq!(h2_outcome(&mut tls, 1).await, H2End::Response(0x88));
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn http2_continuation_flood_is_cut_off() {
    let (up, proxy) = setup().await;
    let (mut from_server, mut to_server) = tokio::io::split(tls_stream(&proxy, &[b"h2"]).await);
    let mut start = PREFACE.to_vec();
    start.extend(frame(4, 0, 0, &[]));
    start.extend(frame(1, 0x1, 1, &get_localhost())); // END_STREAM, no END_HEADERS
    to_server.write_all(&start).await.unwrap();
    // While we flood, read what the server sends. Its SETTINGS, SETTINGS ACK
    // and WINDOW_UPDATE come whether or not it protects itself: only a GOAWAY
    // or the end of the connection means it stopped reading our block.
    let sent = Arc::new(AtomicUsize::new(0));
    let server_side = {
        let sent = sent.clone();
        tokio::spawn(async move {
            loop {
                let mut head = [0u8; 9];
                if from_server.read_exact(&mut head).await.is_err() {
                    return (H2End::Closed, sent.load(Ordering::SeqCst));
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if from_server.read_exact(&mut payload).await.is_err() {
                    return (H2End::Closed, sent.load(Ordering::SeqCst));
                }
                if head[3] == 7 {
                    return (H2End::GoAway(code(&payload, 4)), sent.load(Ordering::SeqCst));
                }
            }
        })
    };
    let filler = frame(9, 0, 1, &literal(b"x-flood", &[b'a'; 120]).repeat(100));
    // Up to 64 MiB of CONTINUATION frames, never ending the header block.
    while sent.load(Ordering::SeqCst) < 64 * 1024 * 1024 && !server_side.is_finished() {
        match tokio::time::timeout(BOUND, to_server.write_all(&filler)).await {
            Ok(Ok(())) => sent.fetch_add(filler.len(), Ordering::SeqCst),
            // Reset, or the server stopped reading: the reader says which.
            Ok(Err(_)) | Err(_) => break,
        };
    }
    let total = sent.load(Ordering::SeqCst);
    let (end, sent_by_then) = tokio::time::timeout(BOUND, server_side)
        .await
        .unwrap_or_else(|_| panic!("no GOAWAY and no close after a CONTINUATION flood of {total} bytes"))
        .unwrap();
    assert!(
        matches!(end, H2End::GoAway(ENHANCE_YOUR_CALM) | H2End::Closed),
        "{end:?} after {sent_by_then} bytes"
    );
    // The limit is max_request_header_bytes (64 KiB); socket buffers hold
    // a few MiB more that the server never reads.
    assert!(
        sent_by_then < 16 * 1024 * 1024,
        "cut off only after {sent_by_then} bytes"
    );
    assert_eq!(up.all_text(), "", "the upstream saw something");
    let mut c = Client::connect(&proxy, true).await;
    let (parts, _) = c
        .text(get(&proxy, "/", true).body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn upstream_garbage_is_502() {
    let up = RawUpstream::start(Behaviour::Garbage).await;
    let proxy = Proxy::start("", up.addr);
    for h2 in [false, true] {
        let mut c = Client::connect(&proxy, h2).await;
        let (parts, body) = c
            .text(get(&proxy, "/", h2).body(Full::new(Bytes::new())).unwrap())
            .await;
        assert_eq!(parts.status, 502, "{body}");
    }
}

#[tokio::test]
async fn upstream_reset_mid_body_is_never_presented_as_complete() {
    let up = RawUpstream::start(Behaviour::ResetMidBody).await;
    let proxy = Proxy::start("", up.addr);
    for h2 in [false, true] {
        let mut c = Client::connect(&proxy, h2).await;
        let resp = c
            .send(get(&proxy, "/", h2).body(Full::new(Bytes::new())).unwrap())
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], "1000000");
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .expect("no hang");
        assert!(
            body.is_err(),
            "h2={h2}: a truncated body must end in an error, not look complete"
        );
    }
}

#[tokio::test]
async fn stale_pooled_connections_are_retried_safely() {
    let up = RawUpstream::start(Behaviour::OnePerConnection).await;
    let proxy = Proxy::start("", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    let mut failures = Vec::new();
    for i in 0..60u64 {
        // Gaps around the upstream's 50 ms close: the pool meets stale connections.
        tokio::time::sleep(Duration::from_millis(20 + (i % 7) * 10)).await;
        let (parts, body) = c
            .text(get(&proxy, "/", false).body(Full::new(Bytes::new())).unwrap())
            .await;
        if parts.status != 200 {
            failures.push((i, parts.status, body));
        }
    }
    assert!(
        failures.is_empty(),
        "GETs failed on stale pooled connections: {failures:?}"
    );
}

/// The race a pool cannot see coming: the app closes a kept-alive connection
/// just as a request is written to it. hyper gives back only a request it did
/// not write, so tlsfront keeps a copy of a bodiless idempotent request's head
/// (on reused connections) to send it again on a new connection.
#[tokio::test]
async fn a_get_the_app_drops_after_it_was_written_is_sent_again() {
    let up = RawUpstream::start(Behaviour::DropsSecondRequest).await;
    let proxy = Proxy::start("", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    for i in 0..3 {
        let (parts, body) = c
            .text(get(&proxy, "/", false).body(Full::new(Bytes::new())).unwrap())
            .await;
        assert_eq!(parts.status, 200, "request {i}: {body}");
    }
    // The second and third GETs each met a pooled connection that read them
    // and closed: each reached the app twice.
    assert_eq!(up.requests(), 5);
}

/// Found by the long suite: hyper's header timer does not cover HTTP/2, so
/// a client trickling the preface or a HEADERS frame held its slot forever.
#[tokio::test]
async fn http2_slowloris_is_cut_off() {
    let up = RawUpstream::start(Behaviour::Ok).await;
    let proxy = Proxy::start(
        "[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
        up.addr,
    );
    let authority = literal(b":authority", b"localhost");
    let mut settings_then_headers = PREFACE.to_vec();
    settings_then_headers.extend(frame(4, 0, 0, &[]));
    let headers = frame(1, 0x5, 1, &[vec![0x82, 0x87, 0x84], authority].concat());
    settings_then_headers.extend(&headers[..headers.len() - 3]);
    // After one real request, a second one trickled: the idle rule applies.
    let mut after_one = PREFACE.to_vec();
    after_one.extend(frame(4, 0, 0, &[]));
    after_one.extend(&headers);
    for (name, bytes, pause_after) in [
        ("trickled preface", PREFACE.to_vec(), 0usize),
        ("trickled HEADERS", settings_then_headers, PREFACE.len() + 9),
        ("second request trickled", after_one.clone(), after_one.len()),
    ] {
        let mut tls = tls_stream(&proxy, &[b"h2"]).await;
        let started = Instant::now();
        let (fast, slow) = bytes.split_at(pause_after);
        let _ = tls.write_all(fast).await;
        let trickle: Vec<u8> = if slow.is_empty() {
            frame(1, 0x4, 3, &[0x82, 0x87, 0x84])
        } else {
            slow.to_vec()
        };
        let mut closed = false;
        for b in trickle.iter().cycle().take(60) {
            if tls.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(250), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(closed, "{name}: a trickling HTTP/2 client must be cut off");
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "{name}: cut off only after {:?}",
            started.elapsed()
        );
    }
}
