//! Black-box tests of several apps behind one tlsfront: route decisions,
//! mounting under a prefix, several servers (spread, retry, ejection,
//! affinity), Unix-socket servers, `check` and reload of the route table.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::upstream::Upstream;
use common::{echoed, echoed_headers, plain_get, read_until, tls_stream, Client, Proxy, RefusingAddr};
use http::Request;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

fn req(proxy: &Proxy, host: &str, path: &str, h2: bool) -> Request<Full<Bytes>> {
    let builder = if h2 {
        Request::get(format!("https://{host}:{}{path}", proxy.port))
    } else {
        Request::get(path).header("host", format!("{host}:{}", proxy.port))
    };
    builder.body(Full::new(Bytes::new())).unwrap()
}

fn which(body: &str) -> String {
    echoed(&echoed_headers(body), "x-echo-upstream")
        .first()
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("no upstream in: {body}"))
}

#[tokio::test]
async fn requests_go_to_the_most_specific_route() {
    let (a, b, c) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let config = format!(
        r#"
[[route]]
host = "app.example"
url = "http://{a}"

[[route]]
host = "app.example"
path = "/admin"
strip_prefix = true
url = "http://{b}"
[route.headers]
set_request = {{ "X-Mounted" = "admin" }}

[[route]]
host = "*.example.org"
url = "http://{c}"
"#,
        a = a.addr,
        b = b.addr,
        c = c.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    for h2 in [false, true] {
        let mut client = Client::connect(&proxy, h2).await;
        let cases: [(&str, &str, u16, Option<SocketAddr>, &str); 11] = [
            ("app.example", "/x?q=1", 200, Some(a.addr), "GET /x?q=1 "),
            (
                "APP.Example",
                "/admin/login?next=/",
                200,
                Some(b.addr),
                "GET /login?next=/ ",
            ),
            ("app.example", "/admin", 200, Some(b.addr), "GET / "),
            (
                "app.example",
                "/administrator",
                200,
                Some(a.addr),
                "GET /administrator ",
            ),
            (
                "app.example",
                "/admin%2Fsecret",
                200,
                Some(a.addr),
                "GET /admin%2Fsecret ",
            ),
            ("app.example", "/admin/../secret", 200, Some(a.addr), "GET /secret "),
            ("app.example", "/public/../admin/x", 200, Some(b.addr), "GET /x "),
            ("www.example.org", "/", 200, Some(c.addr), "GET / "),
            ("a.b.example.org", "/", 421, None, "421 Misdirected Request"),
            ("unknown.test", "/", 421, None, "421 Misdirected Request"),
            ("example.org", "/", 421, None, "421 Misdirected Request"),
        ];
        for (host, path, status, upstream, start) in cases {
            let (parts, body) = client.text(req(&proxy, host, path, h2)).await;
            assert_eq!(parts.status, status, "{host}{path} h2={h2}: {body}");
            assert!(body.starts_with(start), "{host}{path} h2={h2}: {body}");
            match upstream {
                Some(addr) => assert_eq!(which(&body), addr.to_string(), "{host}{path} h2={h2}"),
                None => assert!(!body.contains("x-echo-upstream"), "{body}"),
            }
            let h = echoed_headers(&body);
            if upstream == Some(b.addr) {
                assert_eq!(echoed(&h, "x-forwarded-prefix"), vec!["/admin"], "{body}");
                assert_eq!(echoed(&h, "x-mounted"), vec!["admin"], "route header override: {body}");
            } else if upstream.is_some() {
                assert!(echoed(&h, "x-forwarded-prefix").is_empty(), "{body}");
                assert!(echoed(&h, "x-mounted").is_empty(), "{body}");
            }
        }
    }
    // A forged prefix from an untrusted client never reaches an app: the
    // mounted one gets exactly tlsfront's, the unmounted one none.
    let mut client = Client::connect(&proxy, false).await;
    for (path, app, expected) in [("/admin/x", b.addr, vec!["/admin"]), ("/x", a.addr, vec![])] {
        let mut forged = req(&proxy, "app.example", path, false);
        forged
            .headers_mut()
            .insert("x-forwarded-prefix", "/evil".parse().unwrap());
        let (parts, body) = client.text(forged).await;
        assert_eq!(parts.status, 200, "{path}: {body}");
        assert_eq!(which(&body), app.to_string(), "{path}");
        assert_eq!(
            echoed(&echoed_headers(&body), "x-forwarded-prefix"),
            expected,
            "{path}: {body}"
        );
    }
}

/// Only the first route that matches on the normalised path takes the
/// request, and an absolute-form target routes by its own authority.
#[tokio::test]
async fn absolute_form_routes_by_its_authority() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let config = format!(
        "[[route]]\nhost = \"a.example\"\nurl = \"http://{}\"\n[[route]]\nhost = \"localhost\"\nurl = \"http://{}\"\n",
        a.addr, b.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    let mut tls = tls_stream(&proxy, &[b"http/1.1"]).await;
    tls.write_all(
        format!(
            "GET https://a.example:{}/x HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            proxy.port, proxy.port
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let reply = String::from_utf8_lossy(&read_until(&mut tls, b"x-echo-upstream").await).into_owned();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(&format!("x-echo-upstream: {}", a.addr)), "{reply}");
}

#[tokio::test]
async fn mounted_app_gets_its_prefix_back_in_cookies_and_redirects() {
    let up = Upstream::start().await;
    let config = format!(
        "[[route]]\npath = \"/admin\"\nstrip_prefix = true\nurl = \"http://{0}\"\n[[route]]\nurl = \"http://{0}\"\n",
        up.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    let mut client = Client::connect(&proxy, false).await;
    let resp = client.send(req(&proxy, "localhost", "/admin/cookies", false)).await;
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cookies,
        vec![
            "session=abc123; Path=/admin; Secure; HttpOnly",
            "prefs=\"a;b\"; Expires=Thu, 01 Jan 2037 00:00:00 GMT; Path=/admin; Secure; HttpOnly",
            "csrftoken=tok; Path=/admin; SameSite=Lax; Secure; HttpOnly",
            "done=1; Secure; HttpOnly; Path=/admin",
        ]
    );
    let resp = client.send(req(&proxy, "localhost", "/admin/redirect", false)).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        format!("https://localhost:{}/admin/next?a=1", proxy.port).as_str()
    );
    assert_eq!(
        resp.headers()["refresh"],
        format!("0; url=https://localhost:{}/admin/later", proxy.port).as_str()
    );
    assert_eq!(resp.headers()["content-location"], "/admin/relative");
    // The same app at the root: nothing is prefixed.
    let resp = client.send(req(&proxy, "localhost", "/cookies", false)).await;
    let first = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert_eq!(first, "session=abc123; Path=/; Secure; HttpOnly");
}

#[tokio::test]
async fn traffic_spreads_and_skips_a_dead_server_without_failing() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let refusing = RefusingAddr::new();
    let dead = refusing.addr;
    for balance in ["round_robin", "least_requests"] {
        let config = format!(
            "[[route]]\nservers = [\"http://{}\", \"http://{}\", \"http://{dead}\"]\nbalance = \"{balance}\"\nmax_fails = 2\n",
            a.addr, b.addr
        );
        let proxy = Proxy::start_with_args(&config, &[]);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..60 {
            let mut client = Client::connect(&proxy, i % 2 == 0).await;
            let (parts, body) = client.text(req(&proxy, "localhost", "/echo", i % 2 == 0)).await;
            assert_eq!(parts.status, 200, "{balance} request {i}: {body}");
            *counts.entry(which(&body)).or_default() += 1;
        }
        let (ca, cb) = (counts[&a.addr.to_string()], counts[&b.addr.to_string()]);
        assert_eq!(ca + cb, 60, "{counts:?}");
        assert!(ca >= 15 && cb >= 15, "{balance}: not spread: {counts:?}");
        let log = proxy.wait_for_log("server ejected", Duration::from_secs(5));
        assert!(log.contains(&format!("http://{dead}")), "{log}");
    }
}

/// A request with a body that meets a dead server first is sent, whole, to
/// the next one: nothing had left tlsfront.
#[tokio::test]
async fn a_refused_connection_sends_even_a_post_to_the_next_server() {
    let up = Upstream::start().await;
    let refusing = RefusingAddr::new();
    let dead = refusing.addr;
    let config = format!(
        "[[route]]\nservers = [\"http://{dead}\", \"http://{}\"]\nmax_fails = 100\n",
        up.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    let mut client = Client::connect(&proxy, false).await;
    for _ in 0..6 {
        let post = Request::post("/submit")
            .header("host", format!("localhost:{}", proxy.port))
            .body(Full::new(Bytes::from_static(b"0123456789")))
            .unwrap();
        let (parts, body) = client.text(post).await;
        assert_eq!(parts.status, 200, "{body}");
        assert!(body.contains("x-echo-body-bytes: 10"), "{body}");
        assert_eq!(which(&body), up.addr.to_string());
    }
}

#[tokio::test]
async fn all_servers_down_is_a_fast_clear_502() {
    let (r1, r2) = (RefusingAddr::new(), RefusingAddr::new());
    let (d1, d2) = (r1.addr, r2.addr);
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\nservers = [\"http://{d1}\", \"http://{d2}\"]\nmax_fails = 1\neject_time = \"30s\"\n"
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    let mut client = Client::connect(&proxy, false).await;
    let (parts, body) = client.text(req(&proxy, "localhost", "/", false)).await;
    assert_eq!(parts.status, 502);
    assert!(body.contains("could not connect"), "{body}");
    for _ in 0..5 {
        let started = Instant::now();
        let (parts, body) = client.text(req(&proxy, "localhost", "/", false)).await;
        let took = started.elapsed();
        assert_eq!(parts.status, 502);
        assert!(body.contains("no healthy server"), "{body}");
        assert!(took < Duration::from_millis(100), "took {took:?}");
    }
    let (status, body) = plain_get(proxy.admin_port(), "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    let servers = ready["routes"][0]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{body}");
    assert!(servers.iter().all(|s| s["available"] == false), "{body}");
}

#[tokio::test]
async fn sticky_cookie_keeps_a_client_on_its_server() {
    let (a, b, c) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let config = format!(
        "[[route]]\nservers = [\"http://{}\", \"http://{}\", \"http://{}\"]\nsticky = \"cookie\"\n",
        a.addr, b.addr, c.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    let mut client = Client::connect(&proxy, false).await;
    let first = client.send(req(&proxy, "localhost", "/echo", false)).await;
    let set = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("tlsfront_server="), "{set}");
    for attr in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..12 {
        let mut r = req(&proxy, "localhost", "/echo", false);
        r.headers_mut()
            .insert("cookie", format!("a=1; {cookie}").parse().unwrap());
        let (parts, body) = client.text(r).await;
        assert!(parts.headers.get("set-cookie").is_none(), "cookie set again");
        seen.insert(which(&body));
    }
    assert_eq!(seen.len(), 1, "affinity broken: {seen:?}");
    // Without the cookie, requests spread again.
    let mut spread = std::collections::HashSet::new();
    for _ in 0..6 {
        let (_, body) = client.text(req(&proxy, "localhost", "/echo", false)).await;
        spread.insert(which(&body));
    }
    assert_eq!(spread.len(), 3, "{spread:?}");
}

/// An app on a Unix socket that answers with the request line, Host and
/// X-Forwarded-Proto; counts the connections it accepts.
#[cfg(unix)]
fn unix_app(sock: &std::path::Path) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let conns = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let proto = req
                        .headers()
                        .get("x-forwarded-proto")
                        .map(|h| h.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(format!(
                        "{} {} host={host} proto={proto}\n",
                        req.method(),
                        req.uri()
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    connections
}

/// The same Unix-socket server, as a `[[route]]` server, as the `[upstream]`
/// fallback route, and from `--upstream`: one code path builds all three.
#[cfg(unix)]
#[tokio::test]
async fn unix_socket_server_is_pooled_like_tcp() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    for (i, how) in ["[[route]] servers", "[upstream] url", "--upstream"]
        .into_iter()
        .enumerate()
    {
        let sock = dir.path().join(format!("app{i}.sock"));
        let connections = unix_app(&sock);
        let url = format!("unix:{}", sock.display());
        let proxy = match how {
            "[[route]] servers" => Proxy::start_with_args(&format!("[[route]]\nservers = [\"{url}\"]\n"), &[]),
            "[upstream] url" => Proxy::start_with_args(&format!("[upstream]\nurl = \"{url}\"\n"), &[]),
            _ => Proxy::start_with_args("", &["--upstream", &url]),
        };
        let mut client = Client::connect(&proxy, false).await;
        for i in 0..5 {
            let (parts, body) = client.text(req(&proxy, "app.example", &format!("/p{i}"), false)).await;
            assert_eq!(parts.status, 200, "{how}: {body}");
            assert_eq!(
                body,
                format!("GET /p{i} host=app.example:{} proto=https\n", proxy.port),
                "{how}"
            );
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "{how}: keep-alive pool over the socket"
        );
    }
}

/// `[upstream]` takes what a route takes: several servers, balanced, and
/// one that refuses connections is skipped.
#[tokio::test]
async fn upstream_fallback_balances_several_servers() {
    let apps = [Upstream::start().await, Upstream::start().await];
    let dead = RefusingAddr::new();
    let config = format!(
        "[upstream]\nservers = [\"http://{}\", \"http://{}\", \"http://{}\"]\n",
        apps[0].addr, apps[1].addr, dead.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    let mut client = Client::connect(&proxy, false).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..9 {
        let (parts, body) = client.text(req(&proxy, "localhost", "/echo", false)).await;
        assert_eq!(parts.status, 200, "{body}");
        seen.insert(which(&body));
    }
    assert_eq!(seen.len(), 2, "both live servers took requests: {seen:?}");
}

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tlsfront.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tlsfront"))
        .args(["check", "-c", path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_route_table_and_rejects_bad_routes() {
    let (code, out, err) = check(
        "[upstream]\nurl = \"http://127.0.0.1:9000\"\n\
         [[route]]\nhost = \"*.example.com\"\nurl = \"http://127.0.0.1:9001\"\n\
         [[route]]\nhost = \"app.example.com\"\npath = \"/admin\"\nstrip_prefix = true\nurl = \"unix:/run/admin.sock\"\n\
         [[route]]\nhost = \"app.example.com\"\nservers = [\"http://127.0.0.1:9002\", \"http://127.0.0.1:9003\"]\n",
    );
    assert_eq!(code, 0, "{err}");
    let table: Vec<&str> = out.lines().filter(|l| l.starts_with("#   ")).collect();
    assert_eq!(
        table,
        vec![
            "#   1. route[1] (app.example.com/admin) -> unix:/run/admin.sock (strip_prefix /admin)",
            "#   2. route[2] (app.example.com/) -> http://127.0.0.1:9002, http://127.0.0.1:9003",
            "#   3. route[0] (*.example.com/) -> http://127.0.0.1:9001",
            "#   4. [upstream] fallback -> http://127.0.0.1:9000",
        ],
        "{out}"
    );
    for (config, key, needle) in [
        (
            "[[route]]\nhost = \"a.example\"\nurl = \"http://127.0.0.1:1\"\n[[route]]\nhost = \"A.example.\"\nurl = \"http://127.0.0.1:2\"\n",
            "route[1].path",
            "same requests as route[0]",
        ),
        (
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[route]]\nurl = \"http://127.0.0.1:2\"\n",
            "route[0].path",
            "fallback could never match",
        ),
        ("[[route]]\nhost = \"a.example\"\n", "route[0].url", "has no server"),
        (
            "[[route]]\npath = \"/\"\nstrip_prefix = true\nurl = \"http://127.0.0.1:1\"\n",
            "route[0].strip_prefix",
            "needs a path prefix",
        ),
        ("[[route]]\npath = \"admin\"\nurl = \"http://127.0.0.1:1\"\n", "route[0].path", "not a path prefix"),
        ("[[route]]\nurl = \"ftp://x\"\n", "route[0].url", "unix:/path/to.sock"),
        ("[[route]]\nhost = \"a:80\"\nurl = \"http://127.0.0.1:1\"\n", "route[0].host", "without a port"),
        (
            "[[route]]\nurl = \"http://127.0.0.1:1\"\nbalance = \"random\"\n",
            "route[0].balance",
            "round_robin",
        ),
    ] {
        let (code, _, err) = check(config);
        assert_eq!(code, 2, "{config}\n{err}");
        assert!(err.contains(&format!("key `{key}")), "{config}\n{err}");
        assert!(err.contains(needle), "{config}\n{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = check("[[route]]\nurl = \"http://127.0.0.1:1\"\n[route.cookies]\nsame_sit = \"lax\"\n");
    assert_eq!(code, 2);
    assert!(err.contains("line 4, column 1"), "{err}");
    assert!(err.contains("same_site"), "did you mean: {err}");
}

#[tokio::test]
async fn reload_swaps_the_route_table_and_keeps_it_on_a_bad_change() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let route = |addr: SocketAddr| format!("[[route]]\nhost = \"localhost\"\nurl = \"http://{addr}\"\n");
    let proxy = Proxy::start_with_args(&route(a.addr), &[]);
    let config = proxy.dir.path().join("tlsfront.toml");
    let ask = || async {
        let mut c = Client::connect(&proxy, false).await;
        let (_, body) = c.text(req(&proxy, "localhost", "/", false)).await;
        which(&body)
    };
    assert_eq!(ask().await, a.addr.to_string());
    std::fs::write(&config, route(b.addr)).unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log("reloaded configuration", Duration::from_secs(10));
    assert_eq!(ask().await, b.addr.to_string());
    std::fs::write(&config, format!("{}[[route]]\nhost = \"localhost\"\n", route(a.addr))).unwrap();
    proxy.signal("HUP");
    let log = proxy.wait_for_log("rejected", Duration::from_secs(10));
    assert!(log.contains("route[1]"), "{log}");
    assert_eq!(ask().await, b.addr.to_string(), "the old table keeps serving");
}

/// A server that breaks its body off after the head is counted as such, per
/// server (the client already has its status: the body just ends in error).
#[tokio::test]
async fn a_body_cut_off_mid_way_is_counted_for_its_server() {
    use common::raw_upstream::{Behaviour, RawUpstream};
    let raw = RawUpstream::start(Behaviour::ResetMidBody).await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\nservers = [\"http://{}\"]\n",
        raw.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    let mut client = Client::connect(&proxy, true).await;
    let resp = client.send(req(&proxy, "localhost", "/big", true)).await;
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::BodyExt::collect(resp.into_body()),
    )
    .await
    .expect("the body ends within 10 s");
    assert!(body.is_err(), "a cut-off body must not look complete");
    let needle = format!(
        "tlsfront_upstream_server_failures_total{{upstream=\"http://{}\",kind=\"reset_mid_body\"}} 1",
        raw.addr
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = plain_get(proxy.admin_port(), "/metrics").await;
        if metrics.contains(&needle) {
            break;
        }
        assert!(Instant::now() < deadline, "{needle} not in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without `tls.cert`, every route host gets a development certificate
/// signed by the development CA, chosen by SNI (a wildcard host gets a
/// wildcard name).
#[tokio::test]
async fn route_hosts_get_development_certificates() {
    use rustls::pki_types::ServerName;
    let up = Upstream::start().await;
    let config = format!(
        "[[route]]\nhost = \"app.test\"\nurl = \"http://{0}\"\n[[route]]\nhost = \"*.sites.test\"\nurl = \"http://{0}\"\n",
        up.addr
    );
    let proxy = Proxy::start_with_args(&config, &[]);
    for name in ["app.test", "blog.sites.test", "localhost"] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let tls = common::connector(&proxy.ca(), &[b"http/1.1"])
            .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
            .await;
        assert!(tls.is_ok(), "{name}: {:?}", tls.err());
    }
    // A name no route and no certificate covers is not verified as itself.
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let other = common::connector(&proxy.ca(), &[b"http/1.1"])
        .connect(ServerName::try_from("other.test").unwrap(), tcp)
        .await;
    assert!(other.is_err(), "other.test must not verify");
}

/// The dead servers above must stay dead for the whole test: a port that was
/// only free a moment ago was once taken by another test's app (CI saw a 404
/// where the 502 was expected).
#[tokio::test]
async fn a_refusing_addr_refuses_and_cannot_be_taken_meanwhile() {
    let refusing = RefusingAddr::new();
    let err = tokio::net::TcpStream::connect(refusing.addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let taken = std::net::TcpListener::bind(refusing.addr).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
}
