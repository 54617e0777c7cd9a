"""A real browser through tlsfront: Debian's Chromium, headless, driven by Playwright.

    Chromium --https://localhost:<proxy_port>--> tlsfront --http--> demo app

What the requests-based tests cannot show is what a *browser* does with the
proxy's answers: whether it accepts the certificate, which protocol it
negotiates by ALPN, and whether it stores the cookies with the Secure and
HttpOnly attributes tlsfront adds. Here the browser's own cookie jar
(``context.cookies()``) and ``document.cookie`` are the evidence.

Certificate trust: Chromium is told to accept exactly tlsfront's leaf
certificate with ``--ignore-certificate-errors-spki-list=<base64 SHA-256 of the
leaf's SubjectPublicKeyInfo>`` -- TLS verification stays on for everything
else (``test_browser_rejects_unpinned_certificate`` is the control: without the
pin the same page fails with ERR_CERT_AUTHORITY_INVALID). Chromium honours
that switch only together with ``--user-data-dir``, which Playwright's
persistent context passes (a fresh empty temporary directory per test).
Note: Chromium matches the pin against every certificate the *server sends*,
and ``tlsfront cert`` writes leaf + CA into cert.pem, so pinning the CA's SPKI
would work too; we pin the leaf.

Requirements:
    * /usr/bin/chromium (Debian package ``chromium``; override with CHROMIUM_BIN).
      Missing is a test FAILURE, not a skip. Install it with
          command -v chromium >/dev/null || (apt-get update && \
              apt-get install -y --no-install-recommends chromium)
    * the ``playwright`` Python package pinned in requirements.txt. Its wheel
      bundles the driver; browsers are NOT downloaded (never run
      ``playwright install``): we launch the system Chromium via executable_path.
    * the ``openssl`` CLI, to compute the SPKI hash (the venv has no
      ``cryptography``).

Two variants of the same login flow: ``http1`` launches Chromium with
``--disable-http2`` (so the page is served over HTTP/1.1), ``h2`` lets ALPN pick
HTTP/2. In both, the page's WebSocket to wss://.../ws must use an HTTP/1.1
Upgrade (status 101): tlsfront does not offer RFC 8441 (extended CONNECT), so
Chromium opens a separate HTTP/1.1 connection for it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEMO_PASSWORD, DEMO_USER, Proxy

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError as exc:  # pragma: no cover - environment problem
    sync_playwright = None
    PlaywrightError = Exception
    _PLAYWRIGHT_IMPORT_ERROR = exc
else:
    _PLAYWRIGHT_IMPORT_ERROR = None

CHROMIUM_BIN = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
INSTALL_HINT = (
    "command -v chromium >/dev/null || "
    "(apt-get update && apt-get install -y --no-install-recommends chromium)"
)

LAUNCH_TIMEOUT_MS = 20_000
ACTION_TIMEOUT_MS = 10_000
WS_TIMEOUT_MS = 5_000
OPENSSL_TIMEOUT = 10

# Flags known to work for headless Chromium as root in a container. Playwright
# adds its own (e.g. --headless, --remote-debugging-pipe, --user-data-dir); the
# later --headless=new wins (both mean the new headless mode since Chrome 132).
BASE_ARGS = [
    "--headless=new",
    "--no-sandbox",  # running as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",  # never route through an HTTP(S)_PROXY from the environment
]


# --------------------------------------------------------------------------- helpers


def spki_sha256_b64(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo DER)) of the FIRST certificate in
    cert_pem (the leaf; tlsfront's cert.pem is leaf + CA), i.e. the format of
    Chromium's --ignore-certificate-errors-spki-list.

    Equivalent to: openssl x509 -in cert.pem -pubkey -noout |
        openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the `openssl` CLI is needed to compute the SPKI pin", pytrace=False)

    def run(args: list[str], data: bytes | None) -> bytes:
        res = subprocess.run(
            [openssl, *args], input=data, capture_output=True, timeout=OPENSSL_TIMEOUT
        )
        if res.returncode != 0:
            pytest.fail(
                f"openssl {' '.join(args)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}",
                pytrace=False,
            )
        return res.stdout

    pubkey_pem = run(["x509", "-in", str(cert_pem), "-pubkey", "-noout"], None)
    spki_der = run(["pkey", "-pubin", "-outform", "der"], pubkey_pem)
    digest = run(["dgst", "-sha256", "-binary"], spki_der)
    assert len(digest) == 32, f"unexpected digest length {len(digest)}"
    return base64.b64encode(digest).decode("ascii")


def require_browser() -> Path:
    """Called first thing in every browser test, so that a missing browser or
    driver is a test FAILURE with instructions (not a skip, not a setup error)."""
    if _PLAYWRIGHT_IMPORT_ERROR is not None:
        pytest.fail(
            f"cannot import playwright ({_PLAYWRIGHT_IMPORT_ERROR}); install the pinned "
            f"requirements: bash scripts/python-env.sh",
            pytrace=False,
        )
    if not (CHROMIUM_BIN.is_file() and os.access(CHROMIUM_BIN, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM_BIN}: the browser tests need Debian's "
            f"chromium package. Install it with:\n    {INSTALL_HINT}\n"
            f"(or set CHROMIUM_BIN). Do NOT run `playwright install`.",
            pytrace=False,
        )
    return CHROMIUM_BIN


@pytest.fixture(scope="module")
def leaf_spki(proxy: Proxy) -> str:
    return spki_sha256_b64(proxy.certdir / "cert.pem")


@pytest.fixture(scope="module")
def playwright_instance():
    """The Playwright driver (a bundled node process; no browser yet)."""
    if sync_playwright is None:
        yield None  # require_browser() fails the test with the reason
        return
    with sync_playwright() as p:
        yield p


def launch(playwright_instance, chromium: Path, user_data_dir: Path, extra_args: list[str]):
    """A persistent context on a fresh, empty profile (= fresh cookie jar)."""
    ctx = playwright_instance.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(chromium),
        headless=True,
        args=BASE_ARGS + extra_args,
        timeout=LAUNCH_TIMEOUT_MS,
        # No ignore_https_errors: certificate errors must stay errors.
    )
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    ctx.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    return ctx


def cookie_jar(ctx, base: str) -> dict[str, dict]:
    return {c["name"]: c for c in ctx.cookies(base)}


def next_hop_protocol(page) -> str:
    return page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")


# JS run in the page: open a WebSocket, send two messages, wait for both
# answers, close cleanly, and report everything. Bounded by its own timer.
WS_SCRIPT = """
async ([url, token, timeoutMs]) => {
  return await new Promise((resolve) => {
    const out = {opened: false, messages: [], error: null, close: null};
    const timer = setTimeout(() => { out.error = 'timeout'; resolve(out); }, timeoutMs);
    let ws;
    try { ws = new WebSocket(url); } catch (e) { out.error = String(e); clearTimeout(timer); resolve(out); return; }
    ws.onopen = () => { out.opened = true; ws.send(token); ws.send('whoami'); };
    ws.onmessage = (ev) => {
      out.messages.push(ev.data);
      if (out.messages.length === 2) ws.close(1000, 'done');
    };
    ws.onerror = () => { out.error = out.error || 'error event'; };
    ws.onclose = (ev) => {
      out.close = {code: ev.code, reason: ev.reason, wasClean: ev.wasClean};
      clearTimeout(timer);
      resolve(out);
    };
  });
}
"""


def websocket_round_trip(page, base: str, cdp) -> tuple[dict, list[dict]]:
    """Echo + whoami over wss:// from the page. Returns the JS report and the
    handshake responses Chromium saw (via CDP)."""
    handshakes: list[dict] = []
    cdp.on("Network.webSocketHandshakeResponseReceived", lambda ev: handshakes.append(ev["response"]))
    ws_url = base.replace("https://", "wss://", 1) + "/ws"
    token = f"hello from chromium {time.monotonic_ns()}"
    result = page.evaluate(WS_SCRIPT, [ws_url, token, WS_TIMEOUT_MS])
    assert result["opened"], f"WebSocket to {ws_url} never opened: {result}"
    assert result["error"] is None, f"WebSocket error: {result}"
    assert len(result["messages"]) == 2, f"expected 2 answers: {result}"
    assert result["messages"][0] == token, f"echo mismatch: {result}"
    info = json.loads(result["messages"][1])
    assert info["scheme"] == "https", info
    assert info["x_forwarded_proto"] == "https", info
    assert info["is_secure"] is True, info
    assert info["remote_addr"] == "127.0.0.1", info
    assert info["url"].startswith(f"{base}/ws"), info
    assert result["close"] == {"code": 1000, "reason": "done", "wasClean": True}, result
    return result, handshakes


# --------------------------------------------------------------------------- tests


def test_browser_rejects_unpinned_certificate(playwright_instance, proxy: Proxy, tmp_path):
    """Control: without the SPKI pin Chromium refuses the dev certificate, so
    the pinned tests below really exercise certificate checking."""
    chromium = require_browser()
    ctx = launch(playwright_instance, chromium, tmp_path / "profile", [])
    try:
        page = ctx.new_page()
        with pytest.raises(PlaywrightError) as excinfo:
            page.goto(f"{proxy.base_url}/login")
        assert "ERR_CERT_AUTHORITY_INVALID" in str(excinfo.value), str(excinfo.value)
    finally:
        ctx.close()


@pytest.mark.parametrize("protocol", ["http/1.1", "h2"], ids=["http1", "h2"])
def test_browser_login_flow(playwright_instance, proxy: Proxy, leaf_spki: str, tmp_path, protocol: str):
    chromium = require_browser()
    base = proxy.base_url
    extra = [f"--ignore-certificate-errors-spki-list={leaf_spki}"]
    if protocol == "http/1.1":
        extra.append("--disable-http2")
    ctx = launch(playwright_instance, chromium, tmp_path / "profile", extra)
    console: list[str] = []
    try:
        page = ctx.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")

        # 1. / redirects to the login page, over https on the proxy's port.
        resp = page.goto(f"{base}/")
        assert resp is not None and resp.status == 200, resp
        assert page.url.startswith(f"{base}/login"), page.url
        assert resp.request.redirected_from is not None
        assert resp.request.redirected_from.url == f"{base}/"
        assert page.locator('input[name="password"]').count() == 1
        tls = resp.security_details() or {}
        assert tls.get("subjectName") == "localhost", tls
        assert next_hop_protocol(page) == protocol

        # 2. Log in through the form (remember me checked).
        page.fill('input[name="username"]', DEMO_USER)
        page.fill('input[name="password"]', DEMO_PASSWORD)
        remember = page.locator('input[name="remember"]')
        remembered = remember.count() == 1
        if remembered:
            remember.check()
        with page.expect_navigation():
            page.click('button[type="submit"]')
        assert page.url == f"{base}/", page.url
        assert page.locator("#protected").count() == 1, page.content()[:2000]
        assert page.inner_text("#user") == DEMO_USER
        assert page.inner_text("#url").startswith(f"{base}/")
        assert page.inner_text("#remote_addr") == "127.0.0.1"
        assert page.inner_text("#scheme") == "https"
        assert next_hop_protocol(page) == protocol

        # 3. The browser stored the cookies with the attributes tlsfront added.
        jar = cookie_jar(ctx, base)
        assert "session" in jar, f"no session cookie in the browser: {jar}"
        names = ["session"] + (["remember_token"] if remembered else [])
        for name in names:
            c = jar.get(name)
            assert c is not None, f"browser did not store {name}: {jar}"
            assert c["secure"] is True, f"{name} stored without Secure: {c}"
            assert c["httpOnly"] is True, f"{name} stored without HttpOnly: {c}"
            assert c["domain"] == "localhost", c  # host-only cookie
        assert jar["session"]["expires"] == -1, jar["session"]  # browser-session cookie
        # Not asserted: c["sameSite"]. Neither the app nor tlsfront sets SameSite,
        # and Playwright reports a missing SameSite as "Lax" (`sameSite ?? "Lax"`
        # in its Chromium backend), so it would prove nothing about the proxy.

        # 4. Still authenticated after reloads and on /whoami.
        for _ in range(3):
            resp = page.reload()
            assert resp is not None and resp.status == 200
            assert page.url == f"{base}/", page.url
            assert page.locator("#protected").count() == 1
        resp = page.goto(f"{base}/whoami")
        assert resp is not None and resp.status == 200
        info = resp.json()
        assert info["authenticated"] is True, info
        assert info["user"] == DEMO_USER
        assert info["url"] == f"{base}/whoami"
        assert info["remote_addr"] == "127.0.0.1"
        assert next_hop_protocol(page) == protocol

        # 5. HttpOnly: page JS cannot see the cookies.
        doc_cookie = page.evaluate("document.cookie")
        assert "session=" not in doc_cookie, f"session cookie visible to JS: {doc_cookie!r}"
        assert "remember_token=" not in doc_cookie, f"remember cookie visible to JS: {doc_cookie!r}"

        # 6. WebSocket from the page: always an HTTP/1.1 Upgrade (101), also
        #    when the page itself is on h2 (no RFC 8441 in tlsfront).
        page.goto(f"{base}/")
        _, handshakes = websocket_round_trip(page, base, cdp)
        assert handshakes, "CDP reported no WebSocket handshake"
        assert [h["status"] for h in handshakes] == [101], handshakes

        # 7. Log out with the page's own form, then / is the login page again.
        with page.expect_navigation():
            page.click('form[action$="/logout"] button')
        assert page.url.startswith(f"{base}/login"), page.url
        resp = page.goto(f"{base}/")
        assert resp is not None and resp.status == 200
        assert page.url.startswith(f"{base}/login"), page.url
        assert resp.request.redirected_from is not None
        assert page.locator('input[name="password"]').count() == 1
        jar = cookie_jar(ctx, base)
        assert "remember_token" not in jar, f"remember cookie survived logout: {jar}"
        for c in jar.values():  # whatever is left must still be hardened
            assert c["secure"] is True and c["httpOnly"] is True, c
        info = page.goto(f"{base}/whoami").json()
        assert info["authenticated"] is False, info
    except Exception:
        if console:
            print("browser console:\n  " + "\n  ".join(console))
        raise
    finally:
        ctx.close()
