//! Hostile input, sent as raw bytes over TLS: request smuggling, protocol
//! abuse, HTTP/2 frame abuse, and upstream faults. Each test asserts what the
//! client got and that the upstream saw nothing it should not.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2raw::{frame, literal, PREFACE};
use common::raw_upstream::{Behaviour, RawUpstream};
use common::{get, tls_stream, Client, Proxy};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `bytes` over a fresh TLS connection (HTTP/1.1) and returns what
/// came back until the server closed or went quiet for a second.
async fn exchange(proxy: &Proxy, bytes: &[u8]) -> String {
    let mut tls = tls_stream(proxy, &[b"http/1.1"]).await;
    let _ = tls.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        assert!(Instant::now() < deadline, "the server kept talking for 10 s");
    }
    String::from_utf8_lossy(&out).into_owned()
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
    let seen = up.all_text().to_ascii_lowercase();
    assert!(
        !seen.contains("/smuggled"),
        "smuggled request reached the upstream:\n{seen}"
    );
    for head in seen.split("\r\n\r\n") {
        assert!(
            !(head.contains("content-length:") && head.contains("transfer-encoding:")),
            "the upstream got both framings:\n{head}"
        );
    }
    // Either refused, or answered once; never two answers for one request.
    assert!(got.matches("HTTP/1.1 ").count() <= 1 || status_of(&got) == 400, "{got}");
}

#[tokio::test]
async fn malformed_heads_are_refused_and_never_forwarded() {
    let (up, proxy) = setup().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "duplicate Content-Length",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n folded\r\n\r\n",
        ),
        (
            "space in header name",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Name: x\r\n\r\n",
        ),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : localhost\r\n\r\n"),
        (
            "NUL in value",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n",
        ),
        ("CR in value", b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n"),
        (
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        ),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
        (
            "bad Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        ),
        (
            "CONNECT",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        ),
        ("garbage request line", b"\x16\x03\x01 nonsense\r\n\r\n"),
    ];
    for (name, bytes) in cases {
        let got = exchange(&proxy, bytes).await;
        let status = status_of(&got);
        assert!(
            (400..500).contains(&status) || got.is_empty(),
            "{name}: expected a 4xx, got {got:?}"
        );
    }
    assert_eq!(up.requests(), 0, "the upstream saw:\n{}", up.all_text());
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
        let got = exchange(&proxy, &bytes).await;
        let status = status_of(&got);
        assert!(status != 200, "{name}: a broken body must not be answered 200: {got:?}");
        assert!(
            got.is_empty() || status == 400,
            "{name}: expected 400 or a closed connection: {got:?}"
        );
    }
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
    let status = status_of(&got);
    assert!(status == 200 || status == 400 || got.is_empty(), "{got:?}");
    let seen = up.all_text();
    assert!(up.requests() <= 1);
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
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(got.ends_with("ok"), "the answer came from our upstream: {got}");
    let seen = up.all_text().to_ascii_lowercase();
    assert!(
        seen.starts_with("get /x?y=1 http/1.1\r\n"),
        "origin-form upstream: {seen}"
    );
    assert!(!seen.contains("http://evil.example"), "{seen}");
}

/// Reads frames until the stream's RST_STREAM or HEADERS, a GOAWAY, or EOF.
/// Returns (frame type, error code or :status byte) of what ended it.
async fn h2_outcome<S: tokio::io::AsyncRead + Unpin>(s: &mut S, stream: u32) -> Option<(u8, u32)> {
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return None;
        }
        match head[3] {
            7 => return Some((7, u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]))),
            3 if id == stream => {
                return Some((3, u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])))
            }
            1 if id == stream => return Some((1, payload.first().copied().unwrap_or(0) as u32)),
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
        let outcome = h2_outcome(&mut tls, 1).await;
        match outcome {
            // RST_STREAM or GOAWAY with PROTOCOL_ERROR, or the connection closed.
            Some((3, 1)) | Some((7, 1)) | None => {}
            // A response HEADERS: must not be a 2xx (":status 200" is static index 8 → 0x88).
            Some((1, first)) => assert!(first != 0x88, "{name}: answered 200"),
            other => panic!("{name}: unexpected outcome {other:?}"),
        }
    }
    assert_eq!(up.requests(), 0, "the upstream saw:\n{}", up.all_text());
    // Everyone else is still served.
    let mut c = Client::connect(&proxy, true).await;
    let (parts, _) = c
        .text(get(&proxy, "/", true).body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn http2_continuation_flood_is_cut_off() {
    let (up, proxy) = setup().await;
    let mut tls = tls_stream(&proxy, &[b"h2"]).await;
    let mut start = PREFACE.to_vec();
    start.extend(frame(4, 0, 0, &[]));
    let authority = literal(b":authority", b"localhost");
    start.extend(frame(1, 0x1, 1, &[vec![0x82, 0x87, 0x84], authority].concat())); // END_STREAM, no END_HEADERS
    tls.write_all(&start).await.unwrap();
    let filler = literal(b"x-flood", &[b'a'; 120]).repeat(100);
    let mut sent = 0usize;
    let mut cut_off = false;
    // Up to 64 MiB of CONTINUATION frames, never ending the header block.
    while sent < 64 * 1024 * 1024 {
        if tls.write_all(&frame(9, 0, 1, &filler)).await.is_err() {
            cut_off = true;
            break;
        }
        sent += filler.len();
        if sent % (1024 * 1024) < filler.len() {
            let mut probe = [0u8; 9];
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut probe)).await {
                // GOAWAY or anything else ends it: the server stopped reading our block.
                let _ = r;
                cut_off = true;
                break;
            }
        }
    }
    if !cut_off {
        cut_off = h2_outcome(&mut tls, 1)
            .await
            .is_none_or(|(kind, _)| kind == 7 || kind == 3);
    }
    assert!(cut_off, "a CONTINUATION flood of {sent} bytes was not cut off");
    assert!(sent < 16 * 1024 * 1024, "cut off only after {sent} bytes");
    assert_eq!(up.requests(), 0);
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
