"""Gunicorn behind tlsfront over a Unix socket sees https with no trust setting
(issue 12, item 4).

    requests --https--> tlsfront --unix:/tmp/.../app.sock--> gunicorn routes_app

The app has no ProxyFix and Gunicorn gets no --forwarded-allow-ips (and
FORWARDED_ALLOW_IPS is removed from its environment): whatever it reports
about the scheme is Gunicorn's own decision. Gunicorn applies
X-Forwarded-Proto only from peers in forwarded_allow_ips (default
"127.0.0.1,::1"), and always from a Unix-socket peer, which has no address.

Compared with:
* the same Gunicorn on TCP 127.0.0.1: trusted too, because tlsfront connects
  from 127.0.0.1, which is in the default list;
* the same Gunicorn on TCP whose trust list does not hold tlsfront's address:
  it ignores X-Forwarded-Proto and builds http:// URLs. In a compose project
  that is the default case (tlsfront connects from 172.x, not loopback).
  Binding Gunicorn to a non-loopback address to reproduce it literally is not
  possible here (the tests bind to 127.0.0.1 only), so the trust list is set
  to 192.0.2.1 (a documentation address) instead: the same code path in
  Gunicorn, "peer not in forwarded_allow_ips". This is also the control that
  shows the assertions above can fail.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from routes_support import Apps, TlsFront, free_port, start_tlsfront

TIMEOUT = 10
SPOOFED = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}


@pytest.fixture
def sockdir():
    # Short path: a Unix socket path must fit in 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="tf-sock-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def apps(tmp_path):
    a = Apps(tmp=tmp_path)
    yield a
    a.stop_all()


def whoami_through(tf: TlsFront) -> dict:
    with requests.Session() as s:
        s.verify = str(tf.ca)
        s.trust_env = False
        r = s.get(f"{tf.base_url}/whoami", headers=SPOOFED, timeout=TIMEOUT, allow_redirects=False)
        assert r.status_code == 200, r.text
        return r.json()


def run_behind_tlsfront(tmp_path: Path, certdir: Path, server_url: str) -> tuple[dict, str]:
    """The app's /whoami answer through a fresh tlsfront, and that tlsfront's
    public base URL (https://localhost:<port>), to compare the app's URLs with."""
    tf = start_tlsfront(tmp_path / "tlsfront", certdir, f'[[route]]\nservers = ["{server_url}"]\n')
    try:
        return whoami_through(tf), tf.base_url
    finally:
        tf.proc.terminate()
        tf.proc.wait(timeout=10)


def assert_sees_https(info: dict, base: str) -> None:
    assert info["wsgi_server"].startswith("gunicorn"), info
    assert info["scheme"] == "https", info
    assert info["is_secure"] is True, info
    assert info["url"] == f"{base}/whoami", info
    assert info["external_index"] == f"{base}/", info
    # tlsfront replaced the client's forged headers with its own.
    assert info["x_forwarded_for"] == "127.0.0.1", info
    assert info["x_forwarded_proto"] == "https", info


def test_gunicorn_on_a_unix_socket_sees_https_without_trust_settings(apps, certdir, sockdir, tmp_path):
    sock = sockdir / "app.sock"
    app = apps.gunicorn("gunicorn-unix", f"unix:{sock}", {"APP_NAME": "unix", "PROXY_FIX": "0"})
    tf = start_tlsfront(tmp_path / "tlsfront", certdir, f'[[route]]\nservers = ["{app.server_url}"]\n')
    try:
        info = whoami_through(tf)
        assert_sees_https(info, tf.base_url)
        # No ProxyFix: remote_addr is Gunicorn's view of the peer, and a
        # Unix-socket peer has no IP address. The client's address reaches
        # the app only as X-Forwarded-For (checked above), as it would over
        # TCP without ProxyFix.
        assert info["remote_addr"] in ("", None), info
        # Readiness lists the socket as the route's server.
        status, ready = tf.readyz()
        assert status == 200, ready
        servers = [s["url"] for r in ready["routes"] for s in r["servers"]]
        assert servers == [f"unix:{sock}"], ready
    finally:
        tf.proc.terminate()
        tf.proc.wait(timeout=10)


def test_gunicorn_on_loopback_tcp_trusts_tlsfront_by_default(apps, certdir, tmp_path):
    port_app = apps.gunicorn("gunicorn-tcp", f"127.0.0.1:{free_port()}", {"APP_NAME": "tcp", "PROXY_FIX": "0"})
    info, base_url = run_behind_tlsfront(tmp_path, certdir, port_app.server_url)
    # The URLs the app builds must be tlsfront's public ones, not merely https.
    assert_sees_https(info, base_url)
    assert info["remote_addr"] == "127.0.0.1", info


def test_gunicorn_on_tcp_ignores_a_peer_outside_its_trust_list(apps, certdir, tmp_path):
    """The compose case: tlsfront's address is not in forwarded_allow_ips."""
    app = apps.gunicorn(
        "gunicorn-untrusting",
        f"127.0.0.1:{free_port()}",
        {"APP_NAME": "tcp-untrusting", "PROXY_FIX": "0"},
        ["--forwarded-allow-ips", "192.0.2.1"],
    )
    info, base_url = run_behind_tlsfront(tmp_path, certdir, app.server_url)
    assert info["wsgi_server"].startswith("gunicorn"), info
    assert info["scheme"] == "http", info
    assert info["is_secure"] is False, info
    # The same host and port as tlsfront's public URL, but http.
    assert info["external_index"] == base_url.replace("https://", "http://", 1) + "/", info
    # tlsfront still sent the right header; Gunicorn chose not to believe it.
    assert info["x_forwarded_proto"] == "https", info
