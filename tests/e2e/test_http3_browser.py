"""Chromium over HTTP/3 (QUIC) and over TCP through tlsfront, and OpenSSL's
s_client with classical groups: what key exchange each really negotiates.

    Chromium --QUIC 127.0.0.1:<port>--> tlsfront --http--> demo app

Chromium (Debian's, headless, driven by Playwright as in test_browser.py) is
forced onto QUIC for the origin with
``--enable-quic --origin-to-force-quic-on=localhost:<port>`` and
``--host-resolver-rules="MAP localhost 127.0.0.1"`` (tlsfront listens on
127.0.0.1 only, and QUIC does not fall back from ::1). The development
certificate is accepted by its SPKI pin
(``--ignore-certificate-errors-spki-list``, computed here with the
``cryptography`` package); everything else stays verified.

Chromium's BoringSSL offers X25519MLKEM768 first, over QUIC and over TCP, so
with tlsfront's default ``tls.key_exchange`` the access log must say
``kx=X25519MLKEM768``; with ``key_exchange = ["X25519"]`` the same browser
must still connect, with ``kx=X25519``. Debian's OpenSSL 3.0 has no ML-KEM:
``openssl s_client -groups X25519:P-256`` must get X25519.

Requirements as test_browser.py (/usr/bin/chromium, playwright pinned; a
missing browser is a FAILURE), plus the ``openssl`` CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEMO_PASSWORD, DEMO_USER, DemoApp
from h3_support import Front, free_dual_port, front_config, spki_sha256_b64, start_front

try:
    from playwright.sync_api import sync_playwright
except ImportError as exc:  # pragma: no cover - environment problem
    sync_playwright = None
    _PLAYWRIGHT_IMPORT_ERROR = exc
else:
    _PLAYWRIGHT_IMPORT_ERROR = None

CHROMIUM_BIN = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
LAUNCH_TIMEOUT_MS = 20_000
ACTION_TIMEOUT_MS = 10_000
OPENSSL_TIMEOUT = 15

BASE_ARGS = [
    "--headless=new",
    "--no-sandbox",  # running as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--host-resolver-rules=MAP localhost 127.0.0.1",
]
MLKEM = "X25519MLKEM768"
KX_METRIC = "tlsfront_tls_key_exchanges_total"


def require_browser() -> Path:
    if _PLAYWRIGHT_IMPORT_ERROR is not None:
        pytest.fail(f"cannot import playwright ({_PLAYWRIGHT_IMPORT_ERROR}): bash scripts/python-env.sh", pytrace=False)
    if not (CHROMIUM_BIN.is_file() and os.access(CHROMIUM_BIN, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM_BIN}: apt-get install -y --no-install-recommends chromium "
            f"(or set CHROMIUM_BIN). Do NOT run `playwright install`.",
            pytrace=False,
        )
    return CHROMIUM_BIN


@pytest.fixture(scope="module")
def playwright_instance():
    if sync_playwright is None:
        yield None
        return
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def bfront(tmp_path_factory, certdir: Path, demo_app: DemoApp) -> Front:
    """tlsfront with every HTTP/3 and TLS key left at its default."""
    port = free_dual_port()
    f = start_front(
        tmp_path_factory.mktemp("h3browser"),
        certdir,
        front_config(port, certdir, upstream=demo_app.base_url),
        port,
        name="tlsfront-h3-browser",
    )
    yield f
    f.stop()


def browser_args(front: Front, quic: bool) -> list[str]:
    args = BASE_ARGS + [f"--ignore-certificate-errors-spki-list={spki_sha256_b64(front.certdir / 'cert.pem')}"]
    if quic:
        args += ["--enable-quic", f"--origin-to-force-quic-on=localhost:{front.port}"]
    else:
        args += ["--disable-quic"]
    return args


def launch(playwright_instance, user_data_dir: Path, args: list[str]):
    ctx = playwright_instance.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(require_browser()),
        headless=True,
        args=args,
        timeout=LAUNCH_TIMEOUT_MS,
    )
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    ctx.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    return ctx


def next_hop_protocol(page) -> str:
    return page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")


def tag(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


# --------------------------------------------------------------------------- tests


def test_chromium_login_over_http3_with_mlkem(playwright_instance, bfront: Front, tmp_path):
    require_browser()
    base = bfront.base_url
    mlkem_before = bfront.metric(KX_METRIC, group=MLKEM)
    ctx = launch(playwright_instance, tmp_path / "profile", browser_args(bfront, quic=True))
    try:
        page = ctx.new_page()
        t = tag("h3login")
        resp = page.goto(f"{base}/?t={t}")
        assert resp is not None and resp.status == 200, resp
        assert page.url.startswith(f"{base}/login"), page.url
        assert next_hop_protocol(page) == "h3"

        page.fill('input[name="username"]', DEMO_USER)
        page.fill('input[name="password"]', DEMO_PASSWORD)
        page.locator('input[name="remember"]').check()
        with page.expect_navigation():
            page.click('button[type="submit"]')
        assert page.url == f"{base}/", page.url
        assert page.locator("#protected").count() == 1, page.content()[:2000]
        assert page.inner_text("#user") == DEMO_USER
        assert page.inner_text("#scheme") == "https"
        assert page.inner_text("#remote_addr") == "127.0.0.1"
        assert next_hop_protocol(page) == "h3"

        jar = {c["name"]: c for c in ctx.cookies(base)}
        for name in ("session", "remember_token"):
            assert name in jar, f"browser did not store {name}: {jar}"
            assert jar[name]["secure"] is True, jar[name]
            assert jar[name]["httpOnly"] is True, jar[name]
        assert "session=" not in page.evaluate("document.cookie")

        info = page.goto(f"{base}/whoami").json()
        assert info["authenticated"] is True and info["scheme"] == "https", info
        assert next_hop_protocol(page) == "h3"
    finally:
        ctx.close()

    line = bfront.wait_access(f'"GET /?t={t} HTTP/3.0" 302')
    assert line.endswith(f" kx={MLKEM}"), line
    line = bfront.wait_access('"POST /login HTTP/3.0" 302')
    assert line.endswith(f" kx={MLKEM}"), line
    assert bfront.metric(KX_METRIC, group=MLKEM) > mlkem_before


def test_chromium_over_tcp_also_mlkem_and_sees_alt_svc(playwright_instance, bfront: Front, tmp_path):
    require_browser()
    base = bfront.base_url
    ctx = launch(playwright_instance, tmp_path / "profile", browser_args(bfront, quic=False))
    try:
        page = ctx.new_page()
        t = tag("tcp")
        resp = page.goto(f"{base}/login?t={t}")
        assert resp is not None and resp.status == 200, resp
        assert next_hop_protocol(page) == "h2"
        assert resp.headers.get("alt-svc") == f'h3=":{bfront.port}"; ma=86400', resp.headers
    finally:
        ctx.close()
    line = bfront.wait_access(f'"GET /login?t={t} HTTP/2.0" 200')
    assert line.endswith(f" kx={MLKEM}"), line


def s_client_get(front: Front, groups: str, path: str) -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the `openssl` CLI is needed (apt-get install openssl)", pytrace=False)
    request = f"GET {path} HTTP/1.1\r\nHost: localhost:{front.port}\r\nConnection: close\r\n\r\n"
    res = subprocess.run(
        [
            openssl, "s_client",
            "-connect", f"127.0.0.1:{front.port}",
            "-servername", "localhost",
            "-groups", groups,
            "-alpn", "http/1.1",
            "-CAfile", str(front.ca),
            "-verify_return_error",
            "-quiet",
        ],
        input=request.encode(),
        capture_output=True,
        timeout=OPENSSL_TIMEOUT,
    )
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0, f"s_client exit {res.returncode}\n{out}\n{res.stderr.decode(errors='replace')}"
    return out


@pytest.mark.parametrize("groups, expected", [("X25519:P-256", "X25519"), ("P-256", "secp256r1")])
def test_openssl_s_client_classical_groups(bfront: Front, groups: str, expected: str):
    before = bfront.metric(KX_METRIC, group=expected)
    t = tag("openssl")
    out = s_client_get(bfront, groups, f"/healthz?t={t}")
    assert out.startswith("HTTP/1.1 200"), out[:500]
    line = bfront.wait_access(f'"GET /healthz?t={t} HTTP/1.1" 200')
    assert line.endswith(f" kx={expected}"), line
    assert bfront.metric(KX_METRIC, group=expected) >= before + 1


def test_chromium_offering_mlkem_gets_x25519_when_configured(
    playwright_instance, certdir: Path, demo_app: DemoApp, tmp_path
):
    require_browser()
    port = free_dual_port()
    f = start_front(
        tmp_path / "front",
        certdir,
        front_config(port, certdir, upstream=demo_app.base_url, tls='key_exchange = ["X25519"]\n'),
        port,
        name="tlsfront-h3-browser-x25519",
    )
    try:
        for quic, proto, nexthop in ((True, "HTTP/3.0", "h3"), (False, "HTTP/2.0", "h2")):
            ctx = launch(playwright_instance, tmp_path / f"profile-{nexthop}", browser_args(f, quic=quic))
            try:
                page = ctx.new_page()
                t = tag(nexthop)
                resp = page.goto(f"{f.base_url}/login?t={t}")
                assert resp is not None and resp.status == 200, resp
                assert next_hop_protocol(page) == nexthop
            finally:
                ctx.close()
            line = f.wait_access(f'"GET /login?t={t} {proto}" 200')
            assert line.endswith(" kx=X25519"), line
        assert f.metric(KX_METRIC, group=MLKEM) == 0
    finally:
        f.stop()
