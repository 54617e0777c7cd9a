"""Hostile review of the issue-20 protections (compression, access, auth,
rate limits, client certificates), black-box against the real binary.

Each test was written against the first version of the protections; those
that found a bug failed there (the commit that fixed it says which) and now
guard the fix; the others guard cases the code got right from the start.

    client --https--> tlsfront --http--> review app (stdlib, written below)
                         \\--GET /verify-*--> the same app playing auth service
"""

from __future__ import annotations

import http.client
import json
import os
import signal

import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from protect_aa_support import Front, check, config_text, start_front
from routes_support import AppProcess, Apps, free_port

REVIEW_APP = r'''
"""App + auth service for test_protect_review.py (stdlib only)."""
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

LAST = {}
LOCK = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def send_body(self, status, body, ctype="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra: self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD": self.wfile.write(body)
    def do_GET(self):
        u = urlsplit(self.path)
        p = u.path
        with LOCK: LAST.setdefault("paths", []).append(p)
        if p == "/healthz":
            return self.send_body(200, b"ok")
        if p == "/last":
            with LOCK: body = json.dumps(LAST).encode()
            return self.send_body(200, body, "application/json")
        if p == "/verify-public":
            xfu = self.headers.get("X-Forwarded-Uri", "")
            with LOCK: LAST["verify"] = [[k, v] for k, v in self.headers.items()]
            if xfu.startswith("/public/"):
                return self.send_body(200, b"", extra=[("Remote-User", "anonymous")])
            return self.send_body(401, b"login first\n")
        if p == "/verify-bearer":
            with LOCK: LAST["bearer"] = [[k, v] for k, v in self.headers.items()]
            if self.headers.get("Authorization") == "Bearer client-token":
                return self.send_body(200, b"", extra=[("Authorization", "Bearer app-token"), ("Remote-User", "api")])
            return self.send_body(401, b"no token\n", extra=[("WWW-Authenticate", "Bearer")])
        if p == "/verify-flood":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Remote-User", "alice")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * (1 << 20)
            frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            end = time.monotonic() + 20
            try:
                while time.monotonic() < end:
                    self.wfile.write(frame)
            except OSError:
                pass
            self.close_connection = True
            return
        if p == "/empty":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"0\r\n\r\n")
            return
        if p == "/trailers":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            data = (b"trailer test line\n" * 400)
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
            self.wfile.write(b"0\r\nX-Checksum: abc123\r\n\r\n")
            return
        # echo
        body = json.dumps({"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}).encode()
        return self.send_body(200, body, "application/json")
    do_HEAD = do_GET
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        return self.do_GET()

class S(ThreadingHTTPServer):
    daemon_threads = True

if __name__ == "__main__":
    S((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), H).serve_forever()

'''


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    a = Apps(tmp=tmp_path_factory.mktemp("protect-review-apps"))
    yield a
    a.stop_all()


@pytest.fixture(scope="module")
def rapp(apps) -> AppProcess:
    script = apps.tmp / "review_app.py"
    script.write_text(REVIEW_APP)
    port = free_port()
    app = AppProcess(
        name="review-app",
        target=f"127.0.0.1:{port}",
        argv=[sys.executable, str(script)],
        env=apps._env({"HOST": "127.0.0.1", "PORT": str(port)}),
        log=apps.tmp / "review-app.log",
    )
    apps.started.append(app)
    return app.start()


@pytest.fixture
def fronts():
    started: list[Front] = []
    yield started
    for f in started:
        f.stop()


@pytest.fixture
def front_with(fronts, certdir, rapp, tmp_path):
    def make(body: str, **kw) -> Front:
        n = len(fronts)
        f = start_front(
            tmp_path / f"tf{n}", certdir, config_text(certdir, rapp.server_url, body, **kw), name=f"tf-review-{n}"
        )
        fronts.append(f)
        return f

    return make


def raw_get(front: Front, path: str, headers: dict | None = None, method: str = "GET"):
    """One HTTPS request with the path sent exactly as given (no normalisation)."""
    ctx = ssl.create_default_context(cafile=str(front.ca))
    conn = http.client.HTTPSConnection("localhost", front.port, context=ctx, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def http_get_app(app: AppProcess, path: str) -> bytes:
    host, port = app.target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def echoed(body: bytes) -> dict:
    return json.loads(body)


def hv(headers: list, name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# =========================================================================== forward auth


def forward_public_config(rapp: AppProcess) -> str:
    # An auth service whose rule is "/public/ is open, the rest needs a login"
    # (Authelia's `resources: ['^/public/']` + `policy: bypass`), in front of a
    # site with [[route]]s, so tlsfront normalises paths for routing.
    return (
        "[auth]\n"
        f'forward = "http://{rapp.target}/verify-public"\n'
        'copy_headers = ["Remote-User"]\n'
        "[[route]]\n"
        'path = "/admin"\n'
        f'url = "{rapp.server_url}"\n'
    )


def test_forward_auth_guard_public_open_private_denied(front_with, rapp):
    f = front_with(forward_public_config(rapp))
    status, _, body = raw_get(f, "/public/page")
    assert status == 200, body
    assert echoed(body)["path"] == "/public/page"
    status, _, body = raw_get(f, "/admin/secret")
    assert status == 401, body


@pytest.mark.parametrize("path", ["/public/../admin/secret", "/public/%2e%2e/admin/secret"], ids=["dotdot", "encoded"])
def test_forward_auth_sees_the_path_the_app_gets(front_with, rapp, path):
    f = front_with(forward_public_config(rapp))
    status, _, body = raw_get(f, path)
    if status == 200:
        pytest.fail(f"auth service allowed it; the app got {echoed(body)['path']!r}")
    assert status == 401, (status, body[:200])


def test_forward_auth_guard_double_slash_is_not_a_bypass(front_with, rapp):
    f = front_with(forward_public_config(rapp))
    status, _, body = raw_get(f, "//admin/secret")
    assert status == 401, (status, body[:200])


def test_forward_auth_2xx_body_is_drained_not_buffered(front_with, rapp):
    f = front_with(
        "[auth]\n"
        f'forward = "http://{rapp.target}/verify-flood"\n'
        'copy_headers = ["Remote-User"]\n'
    )
    raw_get(f, "/warm-up")
    base = rss_kib(f.proc.pid)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda i: raw_get(f, f"/x{i}")[0], range(3)))
    assert all(s in (200, 502, 504) for s in statuses), statuses
    grown = hwm_kib(f.proc.pid) - base
    assert grown < 48 * 1024, f"tlsfront grew by {grown // 1024} MiB while the auth service sent a body"


def test_forward_auth_sees_the_clients_authorization_even_when_copied_back(front_with, rapp):
    f = front_with(
        "[auth]\n"
        f'forward = "http://{rapp.target}/verify-bearer"\n'
        'copy_headers = ["Authorization", "Remote-User"]\n'
    )
    status, _, body = raw_get(f, "/api/x", {"Authorization": "Bearer client-token"})
    assert status == 200, (status, body[:200])
    assert hv(echoed(body)["headers"], "Authorization") == ["Bearer app-token"], echoed(body)["headers"]


def test_guard_forward_auth_copied_authorization_replaces_a_forged_one(front_with, rapp):
    # Without the client's token the auth service refuses: a forged one never reaches the app.
    f = front_with(
        "[auth]\n"
        f'forward = "http://{rapp.target}/verify-bearer"\n'
        'copy_headers = ["Remote-User"]\n'
    )
    status, headers, _ = raw_get(f, "/api/y", {"Authorization": "Bearer forged"})
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    status, _, body = raw_get(f, "/api/y", {"Authorization": "Bearer client-token", "Remote-User": "root"})
    assert status == 200
    assert hv(echoed(body)["headers"], "Remote-User") == ["api"], echoed(body)["headers"]


# =========================================================================== tlsfront check


def test_check_guard_copy_headers_without_forward_is_refused(tmp_path, certdir):
    res = check(tmp_path, config_text(certdir, "http://127.0.0.1:9", '[auth]\ncopy_headers = ["Remote-User"]\n'))
    assert res.returncode != 0, res.out
    assert "copy_headers" in res.out, res.out


def test_check_route_forward_off_under_top_level_copy_headers(tmp_path, certdir):
    body = (
        "[auth]\n"
        'forward = "http://127.0.0.1:9091/api/verify"\n'
        'copy_headers = ["Remote-User", "Remote-Groups"]\n'
        "[[route]]\n"
        'path = "/healthz"\n'
        'url = "http://127.0.0.1:9"\n'
        "[route.auth]\n"
        'forward = ""\n'
    )
    res = check(tmp_path, config_text(certdir, "http://127.0.0.1:9", body))
    assert res.returncode == 0, res.out


def test_check_route_basic_under_top_level_forward(tmp_path, certdir):
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode() + "\n")
    body = (
        "[auth]\n"
        'forward = "http://127.0.0.1:9091/api/verify"\n'
        'copy_headers = ["Remote-User"]\n'
        "[[route]]\n"
        'path = "/ops"\n'
        'url = "http://127.0.0.1:9"\n'
        "[route.auth]\n"
        f'basic = "{htpasswd}"\n'
    )
    res = check(tmp_path, config_text(certdir, "http://127.0.0.1:9", body))
    assert res.returncode == 0, res.out


def test_check_refuses_an_argon2_time_cost_that_takes_minutes(tmp_path, certdir):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        "alice:$argon2id$v=19$m=65536,t=100000,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG\n"
    )
    res = check(tmp_path, config_text(certdir, "http://127.0.0.1:9", f'[auth]\nbasic = "{htpasswd}"\n'))
    assert res.returncode != 0, res.out


# =========================================================================== header forgery


def test_client_xfcc_through_a_trusted_proxy_is_removed_once_tlsfront_asks_for_certificates(
    front_with, fronts, certdir, rapp, tmp_path
):
    forged = {"X-Forwarded-Client-Cert": 'Hash=00;Subject="CN=admin"'}
    trusted = 'trusted_proxies = ["127.0.0.1/32"]'
    # Without client certificates of its own, a trusted proxy's XFCC stands
    # (it terminated the client's TLS), as its X-Forwarded-For does.
    f = front_with("", forwarded=trusted)
    status, _, body = raw_get(f, "/xfcc", forged)
    assert status == 200
    assert hv(echoed(body)["headers"], "X-Forwarded-Client-Cert") == ['Hash=00;Subject="CN=admin"']
    # Asking for certificates itself, tlsfront's verification is the only word.
    text = config_text(certdir, rapp.server_url, "", forwarded=trusted).replace(
        "[tls]\n", f'[tls]\nclient_ca = "{certdir / "ca.pem"}"\nclient_auth = "optional"\n', 1
    )
    f = start_front(tmp_path / "tf-xfcc", certdir, text, name="tf-review-xfcc")
    fronts.append(f)
    status, _, body = raw_get(f, "/xfcc", forged)
    assert status == 200
    assert hv(echoed(body)["headers"], "X-Forwarded-Client-Cert") == [], echoed(body)["headers"]


@pytest.mark.parametrize("name", ["X-Forwarded-Client-Cert", "X_Forwarded_Client_Cert", "X-Forwarded-User", "x_forwarded_user"])
def test_guard_untrusted_client_identity_headers_are_removed(front_with, name):
    f = front_with("")
    status, _, body = raw_get(f, "/forge", {name: "admin"})
    assert status == 200
    headers = echoed(body)["headers"]
    assert [k for k, _ in headers if k.lower().replace("_", "-") == name.lower().replace("_", "-")] == [], headers


@pytest.mark.parametrize("name", ["Remote-User", "remote_user", "REMOTE-USER"])
def test_guard_forward_auth_copy_headers_cannot_be_forged_on_a_public_path(front_with, rapp, name):
    f = front_with(forward_public_config(rapp), forwarded='trusted_proxies = ["127.0.0.1/32"]')
    status, _, body = raw_get(f, "/public/x", {name: "root"})
    assert status == 200, body
    assert hv(echoed(body)["headers"], "Remote-User") == ["anonymous"], echoed(body)["headers"]
    assert [k for k, _ in echoed(body)["headers"] if k.lower() == "remote_user"] == []


# =========================================================================== rate limit and reload


def test_reload_keeps_rate_limit_counters(front_with):
    f = front_with('[rate_limit]\nrequests = 1\nper = "10m"\nburst = 1\n')
    assert raw_get(f, "/rl")[0] == 200
    assert raw_get(f, "/rl")[0] == 429
    before = f.log_text().count("reload")
    os.kill(f.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and f.log_text().count("reload") == before:
        time.sleep(0.1)
    assert f.log_text().count("reload") > before, f.log_text()[-2000:]
    time.sleep(0.3)
    assert raw_get(f, "/rl")[0] == 429


# =========================================================================== compression


def decode(coding: str, data: bytes) -> bytes:
    import gzip

    import brotli
    import zstandard

    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


@pytest.mark.parametrize("coding", ["zstd", "br", "gzip"])
def test_guard_empty_chunked_body_compresses_to_a_valid_empty_stream(front_with, coding):
    f = front_with("")
    status, headers, body = raw_get(f, "/empty", {"Accept-Encoding": coding})
    assert status == 200
    assert headers.get("Content-Encoding") == coding, dict(headers)
    assert headers.get("Content-Length") is None, dict(headers)
    assert decode(coding, body) == b""


def curl(front: Front, path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "15", "--cacert", str(front.ca), "-D", "-", "-o", "/dev/null", *args,
         f"https://localhost:{front.port}{path}"],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("coding", ["gzip", "identity"])
@pytest.mark.parametrize("proto", ["--http2", "--http1.1"])
def test_guard_trailers_survive_compression(front_with, proto, coding):
    f = front_with('[compression]\nmin_bytes = 0\n')
    res = curl(f, "/trailers", proto, "-H", f"Accept-Encoding: {coding}", "-H", "TE: trailers")
    out = res.stdout.lower()
    if coding != "identity":
        assert f"content-encoding: {coding}" in out, res.stdout + res.stderr
    assert "content-length" not in out, res.stdout
    assert "x-checksum: abc123" in out, res.stdout + res.stderr


# =========================================================================== client certificates

from test_protect_mtls import https_get, pki, probe  # noqa: E402,F401  (fixture re-used)
from test_protect_mtls import echo_app  # noqa: E402,F401
from test_protect_mtls import site_front  # noqa: E402,F401


def test_no_alt_svc_for_a_client_cert_site_on_a_connection_for_another(pki, site_front):
    r = https_get(site_front.port, pki, "open.test", "secure.test", probe())
    assert r.status == 421, r
    assert r.header("alt-svc") == [], r.header("alt-svc")


def test_guard_client_xfcc_is_replaced_by_the_verified_one(pki, site_front, echo_app):
    forged = 'Hash=00;Subject="CN=root"'
    r = https_get(site_front.port, pki, "secure.test", "secure.test", probe(), pki.alice,
                  headers={"X-Forwarded-Client-Cert": forged, "X_Forwarded_Client_Cert": forged})
    assert r.status == 200, r
    got = r.app_header("X-Forwarded-Client-Cert") + r.app_header("X_Forwarded_Client_Cert")
    assert len(got) == 1 and forged not in got, got


def test_check_refuses_framing_headers_in_copy_headers(tmp_path, certdir):
    body = '[auth]\nforward = "http://127.0.0.1:9091/verify"\ncopy_headers = ["Content-Length", "Remote-User"]\n'
    res = check(tmp_path, config_text(certdir, "http://127.0.0.1:9", body))
    assert res.returncode != 0, res.out


@pytest.mark.parametrize("proto", ["--http2", "--http1.1"])
@pytest.mark.parametrize("coding", ["zstd", "br", "gzip"])
def test_guard_compressed_response_with_app_content_length(front_with, tmp_path, proto, coding):
    f = front_with("")
    out = tmp_path / "body"
    pad = "a" * 3000
    res = subprocess.run(
        ["curl", "-sS", "--max-time", "15", "--cacert", str(f.ca), proto, "-D", "-", "-o", str(out),
         "-H", f"Accept-Encoding: {coding}", "-H", f"X-Pad: {pad}", f"https://localhost:{f.port}/cl-{coding}"],
        capture_output=True, text=True, timeout=30,
    )
    head = res.stdout.lower()
    assert res.returncode == 0, res.stderr
    assert f"content-encoding: {coding}" in head, res.stdout
    assert "content-length" not in head, res.stdout
    assert "vary: accept-encoding" in head, res.stdout
    got = json.loads(decode(coding, out.read_bytes()))
    assert got["path"] == f"/cl-{coding}" and hv(got["headers"], "X-Pad") == [pad]
