"""HTTP/3 (QUIC) through tlsfront, with a real aioquic client (h3client.py).

    H3Client --QUIC/UDP 127.0.0.1:<port>--> tlsfront --http--> demo app / h3_app
    requests, h2 --TLS/TCP 127.0.0.1:<port>-->  (same port)

The contract under test: with `[listen] http3 = true` (the default) tlsfront
listens on UDP at listen.https's address and port and serves HTTP/3 with the
same certificates, routes and request policy as HTTP/1.1 and HTTP/2
(forwarded headers, hardened cookies, rewritten redirects, limits); every
HTTP/1.1 and HTTP/2 response advertises it with
`Alt-Svc: h3=":<public port>"; ma=86400`; access-log lines say `HTTP/3.0`
and end with ` kx=<group>`; /metrics counts handshakes by key exchange group;
`tls.key_exchange` restricts the groups (unknown names are a `tlsfront
check` error with a did-you-mean); 0-RTT is refused by default; SIGHUP
applies to new QUIC connections; SIGTERM sends GOAWAY and lets in-flight
requests finish. Hostile input (garbage datagrams, fake Initials, a
stream-reset flood) leaves it serving.

Where HTTP/3 must behave as HTTP/1.1 does (cookies, redirects), the test asks
both and compares, so it checks the contract's "same policy" and not a
guess of what that policy prints.

Ports are chosen here (free for TCP and UDP) and written into the config:
`listen.https = "127.0.0.1:0"` would leave open which UDP port HTTP/3 gets.

aioquic 1.7.2 cannot offer X25519MLKEM768: ML-KEM over QUIC is checked with
Chromium in test_http3_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.tls import Epoch

from conftest import DEMO_PASSWORD, DEMO_USER, DemoApp, tlsfront_bin
from h3_support import (
    Front,
    H3App,
    free_dual_port,
    front_config,
    h2_get,
    json_body,
    make_certdir,
    start_front,
    start_h3_app,
    udp_port_in_use,
    udp_sockets_of,
    wait_for,
)
from h3client import H3Client, H3Timeout

TIMEOUT = 10.0
ALT_SVC_MA = 86400


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def h3certs(tmp_path_factory) -> Path:
    """Dev CA + leaf for localhost, 127.0.0.1 and tools.test (the host route)."""
    return make_certdir(tmp_path_factory.mktemp("h3certs"), ["localhost", "127.0.0.1", "tools.test"])


@pytest.fixture(scope="module")
def h3app(tmp_path_factory) -> H3App:
    app = start_h3_app(tmp_path_factory.mktemp("h3app"), "h3app")
    yield app
    app.stop()


def routes(app: H3App, mount: str = "/mnt") -> str:
    return (
        "[[route]]\n"
        'host = "tools.test"\n'
        f'url = "{app.url}"\n'
        "\n[[route]]\n"
        f'path = "{mount}"\n'
        "strip_prefix = true\n"
        f'url = "{app.url}"\n'
    )


@pytest.fixture(scope="module")
def front(tmp_path_factory, h3certs, h3app, demo_app: DemoApp) -> Front:
    """tlsfront with defaults for everything HTTP/3 (http3, key_exchange,
    early_data not written): demo app as fallback, h3_app at /mnt and for
    tools.test."""
    port = free_dual_port()
    cfg = front_config(
        port,
        h3certs,
        upstream=demo_app.base_url,
        limits="max_request_body_bytes = 8388608\n",
        tail=routes(h3app),
    )
    f = start_front(tmp_path_factory.mktemp("front"), h3certs, cfg, port, name="tlsfront-h3")
    yield f
    f.stop()


@pytest.fixture(scope="module")
def limits_front(tmp_path_factory, h3certs, h3app, demo_app: DemoApp) -> Front:
    port = free_dual_port()
    cfg = front_config(
        port,
        h3certs,
        upstream=demo_app.base_url,
        limits="max_request_header_bytes = 8192\nmax_request_body_bytes = 65536\n",
        tail=routes(h3app),
    )
    f = start_front(tmp_path_factory.mktemp("limits"), h3certs, cfg, port, name="tlsfront-h3-limits")
    yield f
    f.stop()


@pytest.fixture(scope="module")
def hostile_front(tmp_path_factory, h3certs, h3app, demo_app: DemoApp) -> Front:
    port = free_dual_port()
    cfg = front_config(port, h3certs, upstream=demo_app.base_url, tail=routes(h3app))
    f = start_front(tmp_path_factory.mktemp("hostile"), h3certs, cfg, port, name="tlsfront-h3-hostile")
    yield f
    f.stop()


def h3(front: Front, **kwargs) -> H3Client:
    kwargs.setdefault("cafile", front.ca)
    return H3Client.connect(front.port, timeout=TIMEOUT, **kwargs)


def https_session(front: Front) -> requests.Session:
    s = requests.Session()
    s.verify = str(front.ca)
    s.trust_env = False
    return s


def tag(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def cookie_attrs(line: str) -> dict[str, str]:
    out = {}
    for part in line.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k:
            out[k.lower()] = v
    return out


# --------------------------------------------------------------------------- HTTP/3 basics


def test_h3_get_through_demo_app_sees_https_and_client_ip(front: Front):
    t = tag("get")
    spoofed = {"x-forwarded-for": "6.6.6.6", "x-forwarded-proto": "http", "x-forwarded-host": "evil.example"}
    with h3(front) as c:
        assert c.alpn == "h3", c.handshake
        r = c.get(f"/whoami?t={t}", headers=spoofed)
    assert r.status == 200, r
    info = json_body(r)
    base = front.base_url
    assert info["scheme"] == "https", info
    assert info["remote_addr"] == "127.0.0.1", info
    assert info["host"] == f"localhost:{front.port}", info
    assert info["url"] == f"{base}/whoami?t={t}", info
    headers = info["headers"]  # as received, before ProxyFix
    assert headers.get("X-Forwarded-Proto") == "https", headers
    assert headers.get("X-Forwarded-For") == "127.0.0.1", headers
    assert headers.get("X-Forwarded-Port") == str(front.port), headers
    assert headers.get("X-Forwarded-Host") == f"localhost:{front.port}", headers
    assert "6.6.6.6" not in json.dumps(info) and "evil.example" not in json.dumps(info), info
    line = front.wait_access(f'"GET /whoami?t={t} HTTP/3.0" 200')
    assert line.startswith("127.0.0.1 "), line


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-content-length"])
def test_h3_post_1mib_body_arrives_intact(front: Front, with_length: bool):
    body = random.Random(42 if with_length else 43).randbytes(1 << 20)
    with h3(front) as c:
        r = c.request(
            "POST",
            "/mnt/sha256",
            body=body,
            headers={"content-type": "application/octet-stream"},
            content_length=with_length,
            timeout=30,
        )
    assert r.status == 200, r
    info = json_body(r)
    assert info["app"] == "h3app", info
    assert info["length"] == len(body), info
    assert info["sha256"] == hashlib.sha256(body).hexdigest(), info


def test_h3_large_download_and_concurrent_streams(front: Front):
    n = 5 * 1024 * 1024 + 7
    with h3(front) as c:
        r = c.get(f"/mnt/bytes?n={n}", timeout=30)
        assert r.status == 200, r
        assert len(r.body) == n, f"got {len(r.body)} bytes of {n}"
        pattern = b"0123456789abcdef"
        assert r.body == (pattern * (n // 16 + 1))[:n]
        # 20 requests in flight at once on one connection: each gets its own answer.
        sids = {c.send_request("GET", f"/mnt/whoami?i={i}"): i for i in range(20)}
        for sid, i in sids.items():
            resp = c.wait_response(sid, timeout=TIMEOUT)
            assert resp.status == 200, resp
            assert json_body(resp)["query"] == f"i={i}", resp


def test_h3_set_cookie_hardened_and_session_works(front: Front):
    base = front.base_url
    form = f"username={DEMO_USER}&password={DEMO_PASSWORD}&remember=1".encode()
    with h3(front) as c:
        r = c.request("POST", "/login", body=form, headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status == 302, r
        location = r.header("location")
        assert location in ("/", f"{base}/"), location
        lines = r.header_all("set-cookie")
        names = [line.split("=", 1)[0].strip() for line in lines]
        assert "session" in names and "remember_token" in names, lines
        for line in lines:
            attrs = cookie_attrs(line)
            assert "secure" in attrs, f"cookie lacks Secure over HTTP/3: {line!r}"
            assert "httponly" in attrs, f"cookie lacks HttpOnly over HTTP/3: {line!r}"
        jar = "; ".join(line.split(";", 1)[0] for line in lines)
        r = c.get("/", headers={"cookie": jar})
        assert r.status == 200, r
        assert b'id="protected"' in r.body, r
        assert f"{base}/".encode() in r.body, r  # the app built https URLs

        # The mounted app's cookie: same bytes as over HTTP/1.1 (Secure,
        # HttpOnly, and the prefix put into its Path).
        r = c.get("/mnt/cookie")
    assert r.status == 200, r
    h3_lines = r.header_all("set-cookie")
    with https_session(front) as s:
        h1 = s.get(f"{base}/mnt/cookie", timeout=TIMEOUT)
    h1_lines = h1.raw.headers.getlist("Set-Cookie")
    assert h3_lines == h1_lines, f"HTTP/3 {h3_lines} vs HTTP/1.1 {h1_lines}"
    attrs = cookie_attrs(h3_lines[0])
    assert "secure" in attrs and "httponly" in attrs, h3_lines
    assert attrs.get("path") == "/mnt", h3_lines


def test_h3_redirects_rewritten_like_http1(front: Front):
    base = front.base_url
    with h3(front) as c:
        leak = c.get("/mnt/leak-redirect")
        absolute = c.get("/go-absolute")
    with https_session(front) as s:
        leak1 = s.get(f"{base}/mnt/leak-redirect", allow_redirects=False, timeout=TIMEOUT)
    assert leak.status == 302, leak
    loc = leak.header("location")
    assert loc == leak1.headers.get("Location"), f"HTTP/3 {loc!r} vs HTTP/1.1 {leak1.headers.get('Location')!r}"
    assert loc.startswith(f"{base}/") and loc.endswith("/target"), loc
    assert "127.0.0.1" not in loc and not loc.startswith("http://"), loc
    assert absolute.status in (301, 302, 303, 307, 308), absolute
    assert absolute.header("location") == f"{base}/", absolute


def test_h3_routes_by_host_and_by_prefix(front: Front, h3app: H3App):
    with h3(front) as c:
        mounted = json_body(c.get("/mnt/whoami?x=1"))
        fallback = json_body(c.get("/whoami"))
    assert mounted["app"] == "h3app", mounted
    assert mounted["path"] == "/whoami", mounted  # strip_prefix
    assert mounted["query"] == "x=1", mounted
    assert mounted["headers"].get("X-Forwarded-Prefix") == "/mnt", mounted
    assert mounted["headers"].get("X-Forwarded-Proto") == "https", mounted
    assert mounted["headers"].get("X-Forwarded-For") == "127.0.0.1", mounted
    assert "authenticated" in fallback and "app" not in fallback, fallback  # the demo app

    with h3(front, server_name="tools.test") as c:
        r = c.get("/whoami", authority=f"tools.test:{front.port}")
        r2 = c.get("/mnt/whoami", authority=f"tools.test:{front.port}")
    assert r.status == 200, r
    by_host = json_body(r)
    assert by_host["app"] == "h3app" and by_host["path"] == "/whoami", by_host
    assert by_host["headers"].get("X-Forwarded-Host") == f"tools.test:{front.port}", by_host
    assert "X-Forwarded-Prefix" not in by_host["headers"], by_host
    # Exact-host routes come first: /mnt on tools.test is the host route's
    # (h3_app has no /mnt/whoami), not the prefix route's.
    assert r2.status == 404, r2


# --------------------------------------------------------------------------- limits


def test_h3_oversized_head_refused_then_new_connection_works(limits_front: Front):
    rng = random.Random(7)
    pad = [(f"x-pad-{i}", rng.randbytes(500).hex()) for i in range(100)]  # ~100 KiB decoded
    small = [(f"x-pad-{i}", rng.randbytes(500).hex()) for i in range(4)]  # ~4 KiB: under the 8 KiB limit
    c = h3(limits_front)
    try:
        ok = c.get("/whoami", headers=small)
        assert ok.status == 200, f"a head under the limit must pass: {ok}"
        sid = c.send_request("GET", "/whoami?t=bighead", headers=pad)
        try:
            r = c.wait_response(sid, timeout=TIMEOUT)
        except ConnectionError:
            r = c.responses[sid]
        print(f"oversized head: status={r.status} reset={r.reset_code} conn_error={r.connection_error}")
        assert r.status in (431, None), f"expected 431 or a stream/connection error: {r}"
        if r.status is None:
            assert r.reset_code is not None or r.connection_error is not None or c.terminated, r
    finally:
        c.close()
    assert limits_front.alive(), "tlsfront died"
    with h3(limits_front) as c2:
        r = c2.get("/whoami")
    assert r.status == 200, f"a new connection after the oversized head: {r}"


def test_h3_oversized_body_gets_413(limits_front: Front):
    before = limits_front.metric("tlsfront_limit_rejections_total", limit="body_bytes")
    rng = random.Random(8)
    with h3(limits_front) as c:
        small = rng.randbytes(32 * 1024)
        r = c.request("POST", "/mnt/sha256", body=small)
        assert r.status == 200, f"a body under the limit must pass: {r}"
        assert json_body(r)["sha256"] == hashlib.sha256(small).hexdigest()

        big = rng.randbytes(256 * 1024)
        r = c.request("POST", "/mnt/sha256", body=big, timeout=TIMEOUT)
        assert r.status == 413, f"declared body over max_request_body_bytes: {r}"
    # Streamed without Content-Length: refused once past the limit (413, or the
    # stream reset when the answer can no longer be a clean 413), never 200.
    c = h3(limits_front)
    try:
        sid = c.send_request("POST", "/mnt/sha256", body=rng.randbytes(256 * 1024), content_length=False)
        try:
            r = c.wait_response(sid, timeout=TIMEOUT)
        except ConnectionError:
            r = c.responses[sid]
        print(f"streamed oversized body: status={r.status} reset={r.reset_code} stop={r.stop_code}")
        assert r.status != 200, r
        assert r.status == 413 or r.reset_code is not None or r.connection_error is not None, r
    finally:
        c.close()
    assert limits_front.alive()
    after = wait_for(
        "limit_rejections_total{limit=body_bytes} to grow",
        lambda: (v := limits_front.metric("tlsfront_limit_rejections_total", limit="body_bytes")) > before and v,
        5,
    )
    assert after >= before + 1


# --------------------------------------------------------------------------- Alt-Svc and the UDP socket


def expected_alt_svc(port: int) -> str:
    return f'h3=":{port}"; ma={ALT_SVC_MA}'


def test_alt_svc_on_http1_and_http2_and_udp_bound(front: Front):
    want = expected_alt_svc(front.port)
    with https_session(front) as s:
        r = s.get(f"{front.base_url}/whoami", timeout=TIMEOUT)
        redirect = s.get(f"{front.base_url}/", allow_redirects=False, timeout=TIMEOUT)
        mounted = s.get(f"{front.base_url}/mnt/whoami", timeout=TIMEOUT)
    assert r.raw.version == 11
    for resp in (r, redirect, mounted):
        assert resp.headers.get("Alt-Svc") == want, (resp.status_code, resp.url, dict(resp.headers))
    status, headers, _ = h2_get(front.port, "/whoami", front.ca)
    assert status == 200
    alt = [v for k, v in headers if k == "alt-svc"]
    assert alt == [want], headers
    # UDP at the same address and port, held by tlsfront.
    assert udp_port_in_use(front.port), "nothing holds UDP 127.0.0.1:<https port>"
    mine = udp_sockets_of(front.proc.pid)
    assert any(f"127.0.0.1:{front.port}" in line for line in mine), mine


def test_listen_port_zero_gives_udp_the_same_port(proxy):
    """conftest's `proxy` listens on 127.0.0.1:0 with an empty config: HTTP/3
    is on by default and must get the port TCP got."""
    mine = udp_sockets_of(proxy.proc.pid)
    assert any(f"127.0.0.1:{proxy.port} " in line for line in mine), (proxy.port, mine)
    with H3Client.connect(proxy.port, cafile=proxy.ca, timeout=TIMEOUT) as c:
        r = c.get("/whoami")
    assert r.status == 200, r
    assert json_body(r)["scheme"] == "https"
    with https_session(proxy) as s:
        r1 = s.get(f"{proxy.base_url}/healthz", timeout=TIMEOUT)
    assert r1.headers.get("Alt-Svc") == expected_alt_svc(proxy.port), dict(r1.headers)


def test_alt_svc_on_tlsfront_own_error_responses(limits_front: Front):
    """`Every` response: also the ones tlsfront makes itself (a 413 here)."""
    with https_session(limits_front) as s:
        r = s.post(f"{limits_front.base_url}/mnt/sha256", data=b"x" * (128 * 1024), timeout=TIMEOUT)
    assert r.status_code == 413, r.status_code
    assert r.headers.get("Alt-Svc") == expected_alt_svc(limits_front.port), dict(r.headers)


def test_alt_svc_uses_public_port(tmp_path, h3certs, demo_app: DemoApp):
    port = free_dual_port()
    cfg = front_config(port, h3certs, upstream=demo_app.base_url, listen="https_public_port = 443\n")
    f = start_front(tmp_path / "pub", h3certs, cfg, port, name="tlsfront-h3-public-port")
    try:
        with https_session(f) as s:
            r = s.get(f"{f.base_url}/healthz", timeout=TIMEOUT)
        assert r.headers.get("Alt-Svc") == expected_alt_svc(443), dict(r.headers)
    finally:
        f.stop()


def test_http3_false_no_alt_svc_no_udp(tmp_path, h3certs, demo_app: DemoApp):
    port = free_dual_port()
    cfg = front_config(port, h3certs, upstream=demo_app.base_url, listen="http3 = false\n")
    f = start_front(tmp_path / "off", h3certs, cfg, port, name="tlsfront-h3-off")
    try:
        with https_session(f) as s:
            r = s.get(f"{f.base_url}/whoami", timeout=TIMEOUT)
        assert r.status_code == 200
        assert "Alt-Svc" not in r.headers, dict(r.headers)
        status, headers, _ = h2_get(port, "/whoami", f.ca)
        assert status == 200 and not [v for k, v in headers if k == "alt-svc"], headers
        assert udp_sockets_of(f.proc.pid) == [], "tlsfront holds a UDP socket with http3 = false"
        with pytest.raises((H3Timeout, ConnectionError)):
            H3Client.connect(port, cafile=f.ca, timeout=2.0).close()
        assert not udp_port_in_use(port), "UDP port taken with http3 = false"
        assert f.alive()
    finally:
        f.stop()


# --------------------------------------------------------------------------- access log, key exchange, metrics


KX_END_RE = re.compile(r" kx=[A-Za-z0-9_]+$")


def test_access_log_http3_lines_and_kx(front: Front):
    t = tag("kx")
    with h3(front, groups=["X25519"]) as c:
        assert c.get(f"/whoami?t={t}-x25519").status == 200
        assert c.negotiated_group == "X25519"
    with h3(front, groups=["secp256r1"]) as c:
        assert c.get(f"/whoami?t={t}-p256").status == 200
        assert c.negotiated_group == "secp256r1"
    with https_session(front) as s:  # Python's OpenSSL 3.0: X25519 first, no ML-KEM
        assert s.get(f"{front.base_url}/whoami?t={t}-tcp", timeout=TIMEOUT).status_code == 200

    line = front.wait_access(f'"GET /whoami?t={t}-x25519 HTTP/3.0" 200')
    assert line.endswith(" kx=X25519"), line
    line = front.wait_access(f'"GET /whoami?t={t}-p256 HTTP/3.0" 200')
    assert line.endswith(" kx=secp256r1"), line
    line = front.wait_access(f'"GET /whoami?t={t}-tcp HTTP/1.1" 200')
    assert line.endswith(" kx=X25519"), line
    lines = front.access_lines()
    bad = [line for line in lines if not KX_END_RE.search(line)]
    assert not bad, f"access-log lines without a trailing kx=: {bad[:5]}"


def test_access_log_json_has_kx(tmp_path, h3certs, demo_app: DemoApp):
    port = free_dual_port()
    cfg = front_config(port, h3certs, upstream=demo_app.base_url, log='access = "json"\n')
    f = start_front(tmp_path / "json", h3certs, cfg, port, name="tlsfront-h3-json")
    try:
        with h3(f, groups=["X25519"]) as c:
            assert c.get("/healthz?t=json-h3").status == 200
        with https_session(f) as s:
            assert s.get(f"{f.base_url}/healthz?t=json-tcp", timeout=TIMEOUT).status_code == 200

        def records():
            out = {}
            for line in f.log_text().splitlines():
                if line.startswith("{"):
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and "path" in rec:
                        out[rec["path"]] = rec
            return out if {"/healthz?t=json-h3", "/healthz?t=json-tcp"} <= out.keys() else None

        recs = wait_for("both JSON access records", records, 5, f.log)
        h3rec, tcprec = recs["/healthz?t=json-h3"], recs["/healthz?t=json-tcp"]
        assert h3rec["protocol"] == "HTTP/3.0" and h3rec["kx"] == "X25519", h3rec
        assert tcprec["protocol"] == "HTTP/1.1" and tcprec["kx"] == "X25519", tcprec
    finally:
        f.stop()


def test_metrics_count_handshakes_by_group(front: Front):
    name = "tlsfront_tls_key_exchanges_total"
    x0 = front.metric(name, group="X25519")
    p0 = front.metric(name, group="secp256r1")
    for _ in range(3):
        with h3(front, groups=["X25519"]) as c:
            assert c.get("/healthz").status == 200
    with h3(front, groups=["secp256r1"]) as c:
        assert c.get("/healthz").status == 200
    with https_session(front) as s:
        assert s.get(f"{front.base_url}/healthz", timeout=TIMEOUT).status_code == 200

    def counted():
        x, p = front.metric(name, group="X25519"), front.metric(name, group="secp256r1")
        return (x - x0, p - p0) if (x - x0, p - p0) == (4, 1) else None

    try:
        wait_for("the handshakes to be counted", counted, 5)
    except BaseException:
        text = "\n".join(line for line in front.metrics().splitlines() if name in line)
        print(f"before: X25519={x0} secp256r1={p0}\n{text}")
        raise


@pytest.mark.parametrize(
    "key_exchange, offers, expected",
    [
        (["X25519"], [["secp256r1", "X25519"]], "X25519"),
        (["secp384r1"], [["X25519", "secp384r1"]], "secp384r1"),
    ],
    ids=["x25519-only", "secp384r1-only"],
)
def test_key_exchange_config_restricts_groups(tmp_path, h3certs, demo_app: DemoApp, key_exchange, offers, expected):
    port = free_dual_port()
    groups = ", ".join(f'"{g}"' for g in key_exchange)
    cfg = front_config(port, h3certs, upstream=demo_app.base_url, tls=f"key_exchange = [{groups}]\n")
    f = start_front(tmp_path / "kx", h3certs, cfg, port, name="tlsfront-h3-kx")
    try:
        for offer in offers:
            t = tag("kxcfg")
            with h3(f, groups=offer) as c:
                assert c.get(f"/healthz?t={t}").status == 200
                assert c.negotiated_group == expected, (offer, c.negotiated_group)
            assert f.wait_access(f"/healthz?t={t} HTTP/3.0").endswith(f" kx={expected}")
        # A client offering none of the configured groups cannot connect.
        others = [g for g in ("X25519", "secp256r1", "secp384r1") if g not in key_exchange]
        with pytest.raises((ConnectionError, H3Timeout)):
            H3Client.connect(port, cafile=f.ca, groups=others, timeout=5.0).close()
        assert f.alive()
    finally:
        f.stop()


def test_early_data_refused_by_default(front: Front):
    with h3(front) as c:
        assert c.get("/healthz").status == 200
        try:
            c.pump(2.0, until=lambda: c.session_tickets)
        except H3Timeout:
            pass
    tickets = list(c.session_tickets)
    ticket = tickets[-1] if tickets else None
    c2 = H3Client(front.port, cafile=front.ca, session_ticket=ticket)
    try:
        c2.start()
        # Sent before the handshake ends: 0-RTT if the ticket allows it.
        sid = c2.send_request("GET", "/healthz?t=zero-rtt")
        r = c2.wait_response(sid, timeout=TIMEOUT)
        assert r.status == 200, r
        assert c2.handshake is not None
        assert c2.handshake.early_data_accepted is False, "0-RTT accepted with early_data = false"
        print(
            f"tickets={len(tickets)} max_early_data_size="
            f"{ticket.max_early_data_size if ticket else None} resumed={c2.handshake.session_resumed}"
        )
    finally:
        c2.close()


# --------------------------------------------------------------------------- 0-RTT with tls.early_data = true


# RFC 9001 section 4.6.1: a ticket that allows 0-RTT says 0xffffffff.
QUIC_MAX_EARLY_DATA = 0xFFFFFFFF
# How long a 0-RTT client keeps its Finished back: the server has had the
# early request for that long before its handshake can complete, so what it
# does with it is what it does with early data (no race with the Finished).
EARLY_HOLD = 0.3


@pytest.fixture(scope="module")
def early_front(tmp_path_factory, h3certs, h3app, demo_app: DemoApp) -> Front:
    port = free_dual_port()
    cfg = front_config(port, h3certs, upstream=demo_app.base_url, tls="early_data = true\n", tail=routes(h3app))
    f = start_front(tmp_path_factory.mktemp("early"), h3certs, cfg, port, name="tlsfront-h3-early")
    yield f
    f.stop()


def early_data_ticket(front: Front):
    """A session ticket from a completed connection, one that allows 0-RTT."""
    with h3(front) as c:
        assert c.get("/healthz").status == 200
        try:
            c.pump(3.0, until=lambda: any(t.max_early_data_size for t in c.session_tickets))
        except H3Timeout:
            pass
    tickets = list(c.session_tickets)
    assert tickets, "no session ticket from tlsfront with tls.early_data = true: no resumption, so no 0-RTT"
    sizes = [t.max_early_data_size for t in tickets]
    assert QUIC_MAX_EARLY_DATA in sizes, f"no ticket allows 0-RTT (max_early_data_size of each: {sizes})"
    return [t for t in tickets if t.max_early_data_size == QUIC_MAX_EARLY_DATA][-1]


def start_0rtt(front: Front, ticket) -> H3Client:
    """A resumed client whose first flight is out (Initial, plus 0-RTT keys)."""
    c = H3Client(front.port, cafile=front.ca, session_ticket=ticket)
    c.start()
    assert c.quic._cryptos[Epoch.ZERO_RTT].send.is_valid(), "aioquic has no 0-RTT keys with this ticket"
    assert not c.quic._cryptos[Epoch.ONE_RTT].send.is_valid()
    return c


def send_early(c: H3Client, method: str, path: str, **kwargs) -> int:
    """Sends a request before the handshake: all of it goes out in 0-RTT
    packets (no 1-RTT keys yet, nothing left unsent)."""
    assert c.handshake is None and not c.quic._cryptos[Epoch.ONE_RTT].send.is_valid()
    sid = c.send_request(method, path, **kwargs)
    sender = c.quic._streams[sid].sender
    assert len(sender._pending) == 0 and not sender._pending_eof, "part of the early request was held back"
    assert c.handshake is None and not c.quic._cryptos[Epoch.ONE_RTT].send.is_valid()
    return sid


def test_early_data_on_get_as_0rtt_accepted(early_front: Front, h3app: H3App):
    f = early_front
    ticket = early_data_ticket(f)
    t = tag("0rtt-get")
    c = start_0rtt(f, ticket)
    try:
        sid = send_early(c, "GET", f"/mnt/whoami?t={t}")
        time.sleep(EARLY_HOLD)
        r = c.wait_response(sid, timeout=TIMEOUT)
        assert c.handshake is not None, r
        assert c.handshake.session_resumed, c.handshake
        assert c.handshake.early_data_accepted is True, f"0-RTT not accepted with early_data = true: {c.handshake}"
        assert r.status == 200, r
        info = json_body(r)
        assert info["app"] == "h3app" and info["method"] == "GET" and info["query"] == f"t={t}", info
        # The connection goes on as usual after the handshake.
        r2 = c.get("/mnt/healthz")
        assert r2.status == 200 and r2.body == b"ok", r2
    finally:
        c.close()
    f.wait_access(f'"GET /mnt/whoami?t={t} HTTP/3.0" 200')


def test_early_data_on_0rtt_get_forwarded_early_carries_early_data_header(early_front: Front, h3app: H3App):
    """An intermediary that forwards a request before the handshake with its
    client completes MUST add `Early-Data: 1` (RFC 8470 section 5.1), so the
    app can answer 425 itself. Whether it was forwarded that early is seen
    from the app's log while the client still keeps its Finished back."""
    f = early_front
    ticket = early_data_ticket(f)
    t = tag("0rtt-hdr")
    c = start_0rtt(f, ticket)
    try:
        sid = send_early(c, "GET", f"/mnt/whoami?t={t}")
        deadline = time.monotonic() + 2.0
        while t not in h3app.log_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        forwarded_early = t in h3app.log_text()  # and no Finished from us yet
        r = c.wait_response(sid, timeout=TIMEOUT)
        assert c.handshake is not None and c.handshake.early_data_accepted is True, c.handshake
        assert r.status == 200, r
        headers = json_body(r)["headers"]
    finally:
        c.close()
    if forwarded_early:
        assert headers.get("Early-Data") == "1", f"forwarded before the handshake completed, without Early-Data: 1: {headers}"


def test_early_data_on_post_as_0rtt_gets_425_and_never_reaches_app(early_front: Front, h3app: H3App):
    f = early_front
    ticket = early_data_ticket(f)
    early, late = tag("0rtt-post"), tag("1rtt-post")
    body = b"x=1&y=2"
    hdrs = {"content-type": "application/x-www-form-urlencoded"}
    c = start_0rtt(f, ticket)
    try:
        sid = send_early(c, "POST", f"/mnt/whoami?t={early}", body=body, headers=hdrs)
        time.sleep(EARLY_HOLD)
        r = c.wait_response(sid, timeout=TIMEOUT)
        assert c.handshake is not None and c.handshake.early_data_accepted is True, (
            f"0-RTT not accepted with early_data = true, so the POST was not early data: {c.handshake}"
        )
        assert r.status == 425, f"a POST in 0-RTT must get 425 Too Early: {r}"
        # The same POST once the handshake is done (and confirmed: HANDSHAKE_DONE).
        c.pump(TIMEOUT, until=lambda: c.quic._handshake_confirmed)
        r2 = c.request("POST", f"/mnt/whoami?t={late}", body=body, headers=hdrs)
        assert r2.status == 200, f"the POST after the handshake: {r2}"
        info = json_body(r2)
        assert info["method"] == "POST" and info["query"] == f"t={late}", info
    finally:
        c.close()
    # The app logs each request it gets (Werkzeug): the late POST is there,
    # the early one never.
    wait_for("the app to log the POST sent after the handshake", lambda: late in h3app.log_text(), 5, h3app.log)
    time.sleep(0.3)
    assert early not in h3app.log_text(), "the POST sent as 0-RTT reached the app"


def send_with_finished(c: H3Client, method: str, path: str, **kwargs) -> int:
    """Sends a request in the client's first 1-RTT flight: in the same
    datagram as its Finished (what browsers do), so after the handshake but
    with nothing in between."""
    deadline = time.monotonic() + TIMEOUT
    while not c.quic._cryptos[Epoch.ONE_RTT].send.is_valid():
        assert time.monotonic() < deadline and c.terminated is None, "no handshake"
        select.select([c.sock], [], [], 0.05)
        c._receive()  # the server's flight: our Finished is queued, not sent
    return c.send_request(method, path, **kwargs)


def test_early_data_on_post_right_after_handshake_is_not_425(early_front: Front):
    """No ticket, so no 0-RTT at all: a POST in the first 1-RTT datagram is not
    early data (RFC 8470 section 5.2: 425 only for requests in early data)."""
    f = early_front
    statuses = []
    for i in range(30):
        c = H3Client(f.port, cafile=f.ca)
        try:
            c.start()
            sid = send_with_finished(c, "POST", f"/mnt/whoami?t=with-finished-{i}", body=b"a=1")
            r = c.wait_response(sid, timeout=TIMEOUT)
            assert c.handshake is not None and not c.handshake.early_data_accepted, c.handshake
            statuses.append(r.status)
        finally:
            c.close()
    print(f"POST with the client's Finished, 30 new connections: {sorted(set(statuses))} "
          f"{[statuses.count(s) for s in sorted(set(statuses))]}")
    assert statuses.count(200) == len(statuses), f"1-RTT requests answered 425 Too Early: {statuses}"


# --------------------------------------------------------------------------- tlsfront check


def run_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    return subprocess.run(
        [str(tlsfront_bin()), "check", "-c", str(cfg)],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


def test_check_unknown_key_exchange_did_you_mean(tmp_path):
    res = run_check(tmp_path, '[tls]\nkey_exchange = ["X25519MLKEM76"]\n')
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr
    assert "tls.key_exchange" in err, err
    assert "X25519MLKEM76" in err, err
    assert re.search(r"did you mean\W+X25519MLKEM768\b", err), err
    assert "line 2" in err, err
    assert "panicked" not in err and len(err.strip().splitlines()) == 1, err


def test_check_accepts_http3_keys(tmp_path):
    res = run_check(
        tmp_path,
        '[listen]\nhttp3 = false\n[tls]\nkey_exchange = ["X25519", "secp256r1"]\nearly_data = false\n',
    )
    assert res.returncode == 0, (res.stdout, res.stderr)


# --------------------------------------------------------------------------- hostile


def quic_varint(n: int) -> bytes:
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return (0x4000 | n).to_bytes(2, "big")
    return (0x80000000 | n).to_bytes(4, "big")


def fake_initial(rng: random.Random) -> bytes:
    """Looks like a QUIC v1 Initial (long header, type 0, version 1, random
    DCID/SCID, no token), padded to 1200 bytes; its payload is random, so it
    can never be decrypted."""
    dcid = rng.randbytes(rng.randint(8, 20))
    scid = rng.randbytes(rng.randint(0, 20))
    head = (
        bytes([0xC0 | rng.randrange(16)])
        + (1).to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + quic_varint(0)
    )
    rest = 1200 - len(head) - 2
    return head + (0x4000 | rest).to_bytes(2, "big") + rng.randbytes(rest)


def test_udp_garbage_and_fake_initials_leave_it_serving(hostile_front: Front):
    f = hostile_front
    rng = random.Random(20261207)
    socks = []
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    sent_bytes = received_bytes = sent = 0
    deadline = time.monotonic() + 30

    def drain():
        nonlocal received_bytes
        for s in socks:
            while True:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                received_bytes += len(data)

    packets = [rng.randbytes(rng.randint(0, 1500)) for _ in range(2000)]
    packets += [fake_initial(rng) for _ in range(500)]
    rng.shuffle(packets)
    try:
        for i, pkt in enumerate(packets):
            assert time.monotonic() < deadline, "sending took too long"
            s = socks[i % len(socks)]
            for _ in range(100):  # bounded retry when the socket buffer is full
                try:
                    s.sendto(pkt, ("127.0.0.1", f.port))
                    sent += 1
                    sent_bytes += len(pkt)
                    break
                except (BlockingIOError, InterruptedError):
                    time.sleep(0.001)
            if i % 100 == 99:
                time.sleep(0.005)  # let the server read them rather than the kernel drop them
                drain()
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            drain()
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()
    assert sent >= 2400, f"only {sent} of {len(packets)} datagrams could be sent"
    assert f.alive(), "tlsfront died under garbage datagrams"
    # Never an amplifier: whatever it answered (version negotiation, stateless
    # resets) is under 3x what it got (RFC 9000 section 8).
    assert received_bytes <= 3 * sent_bytes, (received_bytes, sent_bytes)
    print(f"sent {sent} datagrams / {sent_bytes} bytes, got back {received_bytes} bytes")
    with h3(f) as c:
        r = c.get("/whoami?t=after-garbage")
    assert r.status == 200, r
    with https_session(f) as s:
        assert s.get(f"{f.base_url}/healthz", timeout=TIMEOUT).status_code == 200
    assert f.alive()


def test_stream_reset_flood_leaves_it_serving(hostile_front: Front, h3app: H3App):
    f = hostile_front
    c = h3(f)
    opened = 0
    credit = None
    outcome = "connection still open"
    try:
        assert c.get("/healthz").status == 200
        deadline = time.monotonic() + 30
        while opened < 200 and time.monotonic() < deadline and c.terminated is None:
            for _ in range(min(50, 200 - opened)):
                try:
                    sid = c.send_request("GET", f"/mnt/whoami?t=rst{opened}", end_stream=False)
                except Exception as exc:  # the connection is closing
                    outcome = f"send refused: {exc!r}"
                    break
                c.reset(sid)
                opened += 1
            c.pump(0.2)
        c.pump(0.5)
        if c.terminated is not None:
            outcome = f"closed by server: {c.terminated}"
        else:
            try:
                r = c.get("/healthz", timeout=TIMEOUT)
                assert r.status == 200 or r.connection_error is not None, r
                outcome = f"same connection answers {r.status}"
            except ConnectionError as exc:
                outcome = f"closed by server: {exc}"
        credit = c.quic._remote_max_streams_bidi  # how many streams the server let us open
    finally:
        c.close(timeout=0.5)
    print(f"opened and reset {opened} streams; stream credit {credit}; {outcome}")
    assert opened >= 100, f"only {opened} streams could be opened ({outcome})"
    assert f.alive(), "tlsfront died under a stream-reset flood"
    with h3(f) as c2:
        r = c2.get("/whoami?t=after-reset-flood")
    assert r.status == 200, r


# --------------------------------------------------------------------------- address validation: Retry and amplification


# src/server/http3.rs RETRY_ABOVE_HANDSHAKES: with more handshakes than this
# in progress, a client whose address is not validated gets a Retry first.
RETRY_ABOVE_HANDSHAKES = 64
PILE_UP = 96
PILE_UP_HANDSHAKE_TIMEOUT = 2.0
# RFC 9000 section 8.1: before the client's address is validated, at most
# three times the bytes received from it.
AMPLIFICATION_FACTOR = 3

LONG_HEADER_TYPES = {0: "initial", 1: "0rtt", 2: "handshake", 3: "retry"}


def client_initial(port: int) -> bytes:
    """A real client's first datagram: aioquic's Initial with its ClientHello,
    padded to 1200 bytes. Whoever sends it and never answers leaves the
    server with a handshake in progress."""
    q = QuicConnection(
        configuration=QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    )
    q.connect(("127.0.0.1", port), now=time.monotonic())
    datagrams = q.datagrams_to_send(now=time.monotonic())
    assert len(datagrams) == 1, [len(d) for d, _ in datagrams]
    data = datagrams[0][0]
    assert len(data) == 1200 and packet_kind(data) == "initial", (len(data), data[:8].hex())
    return data


def packet_kind(datagram: bytes) -> str:
    """The (first) packet's type, from its first byte: QUIC v1 long headers
    carry it in bits 4-5 (RFC 9000 section 17.2)."""
    first = datagram[0]
    if not first & 0x80:
        return "1rtt"
    if datagram[1:5] == b"\x00\x00\x00\x00":
        return "version_negotiation"
    return LONG_HEADER_TYPES[(first >> 4) & 0x3]


def watched_client(front: Front) -> tuple[H3Client, list[str]]:
    """An H3Client that notes the kind of every datagram it receives."""
    c = H3Client(front.port, cafile=front.ca)
    kinds: list[str] = []
    receive = c.quic.receive_datagram

    def noted(data, addr, now):
        kinds.append(packet_kind(data))
        return receive(data, addr, now)

    c.quic.receive_datagram = noted
    return c, kinds


def new_client_get(front: Front, path: str) -> tuple[list[str], int, object]:
    """A new connection, one GET: (kinds of the datagrams received, aioquic's
    retry count, response)."""
    c, kinds = watched_client(front)
    try:
        c.start()
        c.wait_handshake(TIMEOUT)
        r = c.get(path)
        return kinds, c.quic._retry_count, r
    finally:
        c.close()


def first_datagram_kinds(socks: list[socket.socket], seen: dict[int, str]) -> list[str | None]:
    """For each (non-blocking) socket, the kind of the first datagram it has
    received (None while none has); reads what has come since, `seen` keeps
    the first kinds between calls."""
    for i, s in enumerate(socks):
        while True:
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            seen.setdefault(i, packet_kind(data))
    return [seen.get(i) for i in range(len(socks))]


@pytest.mark.parametrize(
    "early_data",
    [
        False,
        True,
    ],
    ids=["early_data-off", "early_data-on"],
)
def test_retry_under_handshake_pile_up_then_none_once_cleared(tmp_path, h3certs, demo_app: DemoApp, early_data: bool):
    port = free_dual_port()
    cfg = front_config(
        port,
        h3certs,
        upstream=demo_app.base_url,
        tls=f"early_data = {str(early_data).lower()}\n",
        limits=f'handshake_timeout = "{int(PILE_UP_HANDSHAKE_TIMEOUT)}s"\n',
    )
    f = start_front(tmp_path / "retry", h3certs, cfg, port, name="tlsfront-h3-retry")
    socks: list[socket.socket] = []
    try:
        kinds, retries, r = new_client_get(f, "/healthz?t=before-pile-up")
        assert r.status == 200, r
        assert kinds[0] == "initial" and retries == 0, f"Retry with no pile-up: {kinds}"

        initials = [client_initial(port) for _ in range(PILE_UP)]  # made before the clock runs
        wait_for("the first client's connection to end", lambda: f.metric("tlsfront_open_quic_connections") == 0, 5)
        failures = f.metric("tlsfront_tls_handshake_failures_total")
        seen: dict[int, str] = {}
        started = time.monotonic()
        for i, data in enumerate(initials):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))  # a source port of its own: a client of its own
            s.setblocking(False)
            socks.append(s)
            s.sendto(data, ("127.0.0.1", port))
            if i % 16 == 15:
                time.sleep(0.005)  # for the server to read them rather than the kernel drop them
        # They pile up as handshakes in progress that never complete, up to
        # the threshold; the Initials beyond it got a Retry, never answered.
        wait_for(
            f"{RETRY_ABOVE_HANDSHAKES} handshakes in progress",
            lambda: f.metric("tlsfront_open_quic_connections") >= RETRY_ABOVE_HANDSHAKES,
            PILE_UP_HANDSHAKE_TIMEOUT / 2,
            f.log,
        )
        piled = f.metric("tlsfront_open_quic_connections")
        lead = time.monotonic() - started
        assert lead < PILE_UP_HANDSHAKE_TIMEOUT / 2, f"the pile-up took {lead:.2f}s to build: too slow to test"
        first_kinds = wait_for(
            "an answer to every Initial of the pile-up",
            lambda: (k := first_datagram_kinds(socks, seen)) and all(k) and k,
            PILE_UP_HANDSHAKE_TIMEOUT / 2,
            f.log,
        )
        # (Not exactly 64: tlsfront counts a handshake in its connection's
        # task, so a burst can get a few more in before the count catches up.)
        retried = first_kinds.count("retry")
        assert first_kinds.count("initial") >= RETRY_ABOVE_HANDSHAKES and retried > 0, (
            f"{piled:.0f} handshakes in progress; first answers: {sorted(set(first_kinds))} "
            f"{[first_kinds.count(k) for k in sorted(set(first_kinds))]}"
        )

        # The first stalled handshakes end at `started` + handshake_timeout.
        assert time.monotonic() - started < PILE_UP_HANDSHAKE_TIMEOUT - 0.5, "too slow: the pile-up is about to clear"
        kinds, retries, r = new_client_get(f, "/healthz?t=during-pile-up")
        print(
            f"{piled:.0f} handshakes in progress after {lead:.2f}s, {retried} of {PILE_UP} stalled clients got a Retry; "
            f"a new client received {kinds[:6]}"
        )
        assert kinds[0] == "retry", f"no Retry first with {piled:.0f} handshakes in progress: {kinds}"
        assert retries == 1, retries
        assert r.status == 200 and r.body == b"ok", f"the client that got a Retry: {r}"

        # handshake_timeout ends the stalled handshakes; then no Retry again.
        wait_for(
            "the stalled handshakes to time out",
            lambda: f.metric("tlsfront_tls_handshake_failures_total") >= failures + RETRY_ABOVE_HANDSHAKES
            and f.metric("tlsfront_open_quic_connections") == 0,
            PILE_UP_HANDSHAKE_TIMEOUT + 5,
            f.log,
        )
        cleared = time.monotonic() - started
        assert cleared >= PILE_UP_HANDSHAKE_TIMEOUT - 0.1, f"stalled handshakes ended after {cleared:.2f}s"
        kinds, retries, r = new_client_get(f, "/healthz?t=after-pile-up")
        assert r.status == 200, r
        assert kinds[0] == "initial" and retries == 0, f"Retry after the pile-up cleared ({cleared:.2f}s): {kinds}"
        assert f.alive()
    finally:
        for s in socks:
            s.close()
        f.stop()


def test_silent_client_gets_at_most_3x_its_initial(hostile_front: Front):
    """One valid 1200-byte Initial from an address that never answers (as a
    spoofed one would not): over 3 s, handshake retransmissions included,
    the server may send it at most 3 x 1200 bytes (RFC 9000 section 8.1).

    quinn-proto 0.11 starts a full-size datagram whenever any of the 3x budget
    is left (quinn PR #1148, for issue #1082), so it can overshoot by up to
    one datagram less a byte. What it must never do is start a datagram once
    the budget is used up, or go on sending: that is asserted; overshooting
    3 x 1200 within that one datagram is reported as an expected failure."""
    f = hostile_front
    data = client_initial(f.port)
    limit = AMPLIFICATION_FACTOR * len(data)
    got: list[tuple[float, str, int]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        start = time.monotonic()
        s.sendto(data, ("127.0.0.1", f.port))
        end = start + 3.0
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([s], [], [], left)
            if ready:
                datagram = s.recv(65536)
                got.append((round(time.monotonic() - start, 2), packet_kind(datagram), len(datagram)))
    sizes = [n for _, _, n in got]
    total = sum(sizes)
    print(f"one {len(data)}-byte Initial: {len(got)} datagrams, {total} bytes back (limit {limit}): {got}")
    assert got and got[0][1] == "initial", f"no handshake answer to a valid Initial: {got}"
    assert sum(sizes[:-1]) < limit, f"a datagram started after {limit} bytes had been sent: {got}"
    assert total < limit + len(data), f"{total} bytes sent to an address that sent {len(data)}: {got}"
    assert f.alive()
    # RFC 9000 8.1 says at most 3 x what was received; quinn-proto 0.11 checks
    # the budget before each datagram and then sends it whole, so the total
    # may pass 3 x by less than one datagram (asserted just above, and said
    # in docs/operations.md): measured 4,065-4,076 bytes for one 1,200-byte
    # Initial.


# --------------------------------------------------------------------------- signals


def test_sighup_reload_routes_for_new_quic_connection(tmp_path, h3certs, h3app: H3App, demo_app: DemoApp):
    port = free_dual_port()

    def cfg(mount: str) -> str:
        return front_config(
            port,
            h3certs,
            upstream=demo_app.base_url,
            tail=f'[[route]]\npath = "{mount}"\nstrip_prefix = true\nurl = "{h3app.url}"\n',
        )

    f = start_front(tmp_path / "hup", h3certs, cfg("/one"), port, name="tlsfront-h3-hup")
    try:
        with h3(f) as c:
            r = c.get("/one/whoami")
            assert r.status == 200 and json_body(r)["app"] == "h3app", r
            assert c.get("/two/whoami").status == 404  # the demo app has no /two
        f.reload(cfg("/two"))
        with h3(f) as c:
            r = c.get("/two/whoami")
            assert r.status == 200, r
            info = json_body(r)
            assert info["app"] == "h3app" and info["path"] == "/whoami", info
            assert c.get("/one/whoami").status == 404, "the old route still answers after SIGHUP"
        assert udp_port_in_use(port) and f.alive()
    finally:
        f.stop()


def test_sighup_new_certificate_for_new_quic_connection(tmp_path, h3certs, demo_app: DemoApp):
    """Points tls.cert/key at a certificate from another CA and reloads: a new
    QUIC connection gets it (trusted by the new CA only)."""
    other = make_certdir(tmp_path / "othercerts", ["localhost", "127.0.0.1"])
    port = free_dual_port()
    f = start_front(
        tmp_path / "hupcert", h3certs, front_config(port, h3certs, upstream=demo_app.base_url), port, name="tlsfront-h3-hupcert"
    )
    try:
        with h3(f, cafile=h3certs / "ca.pem") as c:
            assert c.get("/healthz").status == 200
        f.reload(front_config(port, other, upstream=demo_app.base_url))
        with h3(f, cafile=other / "ca.pem") as c:
            assert c.get("/healthz").status == 200
        with pytest.raises(ConnectionError):
            H3Client.connect(port, cafile=h3certs / "ca.pem", timeout=5.0).close()
    finally:
        f.stop()


def test_sigterm_goaway_inflight_h3_request_finishes(tmp_path, h3certs, h3app: H3App, demo_app: DemoApp):
    shutdown_timeout = 8.0
    port = free_dual_port()
    cfg = front_config(
        port,
        h3certs,
        upstream=demo_app.base_url,
        limits=f'shutdown_timeout = "{int(shutdown_timeout)}s"\n',
        tail=f'[[route]]\npath = "/mnt"\nstrip_prefix = true\nurl = "{h3app.url}"\n',
    )
    f = start_front(tmp_path / "term", h3certs, cfg, port, name="tlsfront-h3-term")
    c = None
    try:
        c = h3(f)
        assert c.get("/healthz").status == 200
        t = tag("term")
        sid = c.send_request("GET", f"/mnt/slow?ms=2000&tag={t}")
        deadline = time.monotonic() + 5
        while f"slow start {t}" not in h3app.log_text():
            assert time.monotonic() < deadline, "the slow request never reached the app"
            c.pump(0.05)
        t0 = time.monotonic()
        f.proc.send_signal(signal.SIGTERM)
        r = c.wait_response(sid, timeout=shutdown_timeout + 2)
        assert r.status == 200, f"in-flight request over HTTP/3 did not finish: {r}"
        assert r.body == b"slow done after 2000 ms", r
        if not c.goaway_ids:
            try:
                c.pump(2.0, until=lambda: c.goaway_ids)
            except (H3Timeout, ConnectionError):
                pass
        try:
            rc = f.proc.wait(timeout=max(0.1, shutdown_timeout + 2 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"tlsfront still running {shutdown_timeout + 2}s after SIGTERM", pytrace=False)
        elapsed = time.monotonic() - t0
        print(f"exited {elapsed:.2f}s after SIGTERM with {rc}; GOAWAY ids {c.goaway_ids}, request stream {sid}")
        assert rc == 0, f"exit code {rc}"
        assert elapsed <= shutdown_timeout + 1.0, elapsed
        assert c.goaway_ids, "no HTTP/3 GOAWAY on SIGTERM"
        # RFC 9114 section 5.2: the GOAWAY id is the first request stream the
        # server did NOT process; requests at or above it may be retried
        # elsewhere. The in-flight request was processed (it got its 200), so
        # the id must be above its stream.
        assert c.goaway_ids[-1] > sid, f"GOAWAY {c.goaway_ids} says stream {sid} was not processed, yet it was answered"
    finally:
        if c is not None:
            c.close(timeout=0.2)
        f.stop()
