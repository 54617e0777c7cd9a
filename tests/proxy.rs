//! Black-box tests of the proxy: the real binary, a real upstream, a real TLS client.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::upstream::Upstream;
use common::{echoed, echoed_headers, get, Client, Proxy, RefusingAddr};
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn http1_forwards_the_truth_to_the_app() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    let req = get(&proxy, "/echo/path?q=1&r=%2F", false)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-port", "80")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=http")
        .header("x-forwarded-prefix", "/evil")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .body(empty())
        .unwrap();
    let (parts, body) = c.text(req).await;
    assert_eq!(parts.status, 200, "{body}");
    assert!(body.starts_with("GET /echo/path?q=1&r=%2F HTTP/1.1\n"), "{body}");
    let h = echoed_headers(&body);
    let port = proxy.port.to_string();
    assert_eq!(echoed(&h, "host"), vec![format!("localhost:{port}")]);
    assert_eq!(echoed(&h, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echoed(&h, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(echoed(&h, "x-forwarded-host"), vec![format!("localhost:{port}")]);
    assert_eq!(echoed(&h, "x-forwarded-port"), vec![port.as_str()]);
    for gone in [
        "x-real-ip",
        "forwarded",
        "x-forwarded-prefix",
        "x-drop-me",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(echoed(&h, gone).is_empty(), "{gone} reached the app: {body}");
    }
    assert!(!body.contains("6.6.6.6") && !body.contains("evil"), "{body}");
}

/// Issue 10: identity headers beyond the classic forwarding set reached the
/// app. Over HTTP/1.1 and HTTP/2, from an untrusted client, every one the
/// issue names, any `X-Forwarded-*` and a configured name are gone; from a
/// trusted proxy they pass.
#[tokio::test]
async fn forged_identity_headers_never_reach_the_app() {
    const FORGED: [&str; 10] = [
        "x-forwarded-client-cert",
        "x-forwarded-uri",
        "x-forwarded-server",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-original-forwarded-for",
        "client-ip",
        "x-original-url",
        "x-auth-user",
    ];
    let up = Upstream::start().await;
    let own = "[forwarded]\nstrip_untrusted = [\"X-Auth-User\"]\n";
    let untrusted = Proxy::start(own, up.addr);
    let trusted = Proxy::start(&format!("{own}trusted_proxies = [\"127.0.0.1\"]\n"), up.addr);
    for (proxy, believed) in [(&untrusted, false), (&trusted, true)] {
        for h2 in [false, true] {
            let mut c = Client::connect(proxy, h2).await;
            let mut req = get(proxy, "/echo/identity", h2).header("x-request-id", "r-1");
            for name in FORGED {
                req = req.header(name, "6.6.6.6");
            }
            let (parts, body) = c.text(req.body(empty()).unwrap()).await;
            assert_eq!(parts.status, 200, "{body}");
            let h = echoed_headers(&body);
            assert_eq!(echoed(&h, "x-request-id"), vec!["r-1"], "{body}");
            for name in FORGED {
                let expected: Vec<&str> = if believed { vec!["6.6.6.6"] } else { vec![] };
                assert_eq!(
                    echoed(&h, name),
                    expected,
                    "{name} (trusted: {believed}, h2: {h2}): {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn http2_becomes_valid_http1_upstream() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[forwarded]\nforwarded = true\nx_real_ip = true\n", up.addr);
    let mut c = Client::connect(&proxy, true).await;
    let req = get(&proxy, "/echo/h2", true)
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-forwarded-for", "6.6.6.6")
        .body(empty())
        .unwrap();
    let (parts, body) = c.text(req).await;
    assert_eq!(parts.version, http::Version::HTTP_2);
    assert_eq!(parts.status, 200);
    assert!(body.starts_with("GET /echo/h2 HTTP/1.1\n"), "{body}");
    let h = echoed_headers(&body);
    assert_eq!(echoed(&h, "host"), vec![format!("localhost:{}", proxy.port)]);
    assert_eq!(echoed(&h, "cookie"), vec!["a=1; b=2"]);
    assert_eq!(echoed(&h, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echoed(&h, "x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(
        echoed(&h, "forwarded"),
        vec![format!("for=127.0.0.1;proto=https;host=\"localhost:{}\"", proxy.port)]
    );
    assert!(!body.contains(":authority") && !body.contains(":path"), "{body}");
    assert!(!body.contains("6.6.6.6"));
}

#[tokio::test]
async fn trusted_proxy_keeps_outer_https_and_extends_the_chain() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[forwarded]\ntrusted_proxies = [\"127.0.0.0/8\"]\n", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    let req = get(&proxy, "/echo", false)
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "www.example.com")
        .header("x-forwarded-port", "443")
        .body(empty())
        .unwrap();
    let (_, body) = c.text(req).await;
    let h = echoed_headers(&body);
    assert_eq!(echoed(&h, "x-forwarded-for"), vec!["198.51.100.7, 127.0.0.1"]);
    assert_eq!(echoed(&h, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(echoed(&h, "x-forwarded-host"), vec!["www.example.com"]);
    assert_eq!(echoed(&h, "x-forwarded-port"), vec!["443"]);
}

#[tokio::test]
async fn set_cookie_is_hardened_and_redirects_fixed() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("[cookies]\nhttp_only_except = [\"csrftoken\"]\n", up.addr);
    for h2 in [false, true] {
        let mut c = Client::connect(&proxy, h2).await;
        let (parts, _) = c.text(get(&proxy, "/cookies", h2).body(empty()).unwrap()).await;
        let cookies: Vec<_> = parts
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            vec![
                "session=abc123; Path=/; Secure; HttpOnly",
                "prefs=\"a;b\"; Expires=Thu, 01 Jan 2037 00:00:00 GMT; Path=/; Secure; HttpOnly",
                "csrftoken=tok; Path=/; SameSite=Lax; Secure",
                "done=1; Secure; HttpOnly",
            ],
            "h2={h2}"
        );
        let (parts, _) = c.text(get(&proxy, "/redirect", h2).body(empty()).unwrap()).await;
        assert_eq!(parts.status, 302);
        let public = format!("https://localhost:{}", proxy.port);
        assert_eq!(parts.headers["location"], format!("{public}/next?a=1").as_str());
        assert_eq!(parts.headers["refresh"], format!("0; url={public}/later").as_str());
        assert_eq!(parts.headers["content-location"], "/relative");
        let (parts, _) = c
            .text(get(&proxy, "/redirect-elsewhere", h2).body(empty()).unwrap())
            .await;
        assert_eq!(parts.headers["location"], "https://accounts.example.com/login");
        let (parts, body) = c.text(get(&proxy, "/hop", h2).body(empty()).unwrap()).await;
        assert_eq!(body, "hop\n");
        for gone in ["x-internal", "keep-alive", "proxy-authenticate"] {
            assert!(
                parts.headers.get(gone).is_none(),
                "{gone} leaked to the client (h2={h2})"
            );
        }
        assert_eq!(parts.headers["x-public"], "yes");
    }
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    // A bound port nothing listens on: connections are refused.
    let refusing = RefusingAddr::new();
    let dead = refusing.addr;
    let proxy = Proxy::start("", dead);
    let mut c = Client::connect(&proxy, false).await;
    let (parts, body) = c.text(get(&proxy, "/", false).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 502);
    assert!(body.contains("could not connect"), "{body}");
    // Logged after the answer is on its way: waited for, not read at once.
    proxy.wait_for_log("upstream failed", Duration::from_secs(5));

    let up = Upstream::start().await;
    let proxy = Proxy::start("[upstream]\nresponse_timeout = \"500ms\"\n", up.addr);
    let mut c = Client::connect(&proxy, true).await;
    let started = Instant::now();
    let (parts, body) = c.text(get(&proxy, "/slow", true).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "504 must come at response_timeout"
    );
    // The connection is still usable afterwards.
    let (parts, _) = c.text(get(&proxy, "/echo", true).body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    const SIZE: u64 = 64 * 1024 * 1024;
    for h2 in [false, true] {
        let mut c = Client::connect(&proxy, h2).await;
        let resp = c
            .send(
                get(&proxy, &format!("/download?bytes={SIZE}"), h2)
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        }
        assert_eq!(total, SIZE, "h2={h2}");

        let upload = Bytes::from(vec![b'u'; 16 * 1024 * 1024]);
        let req = if h2 {
            Request::post(format!("https://localhost:{}/upload", proxy.port))
        } else {
            Request::post("/upload").header("host", "localhost")
        }
        .body(Full::new(upload))
        .unwrap();
        let (parts, body) = c.text(req).await;
        assert_eq!(parts.status, 200);
        assert_eq!(body.trim(), (16 * 1024 * 1024).to_string(), "h2={h2}");
    }
}

#[tokio::test]
async fn server_sent_events_arrive_as_sent() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    let resp = c.send(get(&proxy, "/sse", false).body(empty()).unwrap()).await;
    let mut body = resp.into_body();
    // The second event is only sent once we have seen the first: a proxy
    // that buffered would time out here.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event must arrive before the stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), b"data: first\n\n");
    up.sse_gate.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.data_ref().unwrap().as_ref(), b"data: second\n\n");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_an_answer() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("no hang")
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("https://localhost/"), "{out}");
}

#[tokio::test]
async fn missing_host_and_connect_are_refused() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    let mut tls = common::tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(b"GET /echo HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));

    let mut tls = common::tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
}

#[tokio::test]
async fn http_listener_redirects_to_https() {
    let up = Upstream::start().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(
        &format!("[listen]\nhttp = \"{free}\"\nhttps_public_port = 443\n"),
        up.addr,
    );
    let mut s = tokio::net::TcpStream::connect(free).await.unwrap();
    s.write_all(b"GET /a/b?c=d HTTP/1.1\r\nHost: www.example.com:8080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("location: https://www.example.com/a/b?c=d\r\n"),
        "{out}"
    );
    drop(proxy);
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", up.addr);
    let mut c = Client::connect(&proxy, false).await;
    let pending = tokio::spawn(async move {
        let req = Request::get("/slow").header("host", "localhost").body(empty()).unwrap();
        c.text(req).await
    });
    // In flight: the app has the request (and takes 5 s to answer it).
    tokio::time::timeout(Duration::from_secs(10), up.slow_started.notified())
        .await
        .expect("the request reaches the app");
    let status = tokio::task::spawn_blocking(move || proxy.terminate()).await.unwrap();
    let (parts, body) = pending.await.unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(body, "slow\n");
    assert!(status.success(), "exit status {status:?}");
}
