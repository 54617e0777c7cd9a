"""Flask-Login behind tlsfront: redirects, cookies and forwarded headers.

The demo app runs with Flask's default cookie settings (no Secure flag) and
ProxyFix(x_for=1, x_proto=1, x_host=1, x_port=1), i.e. it trusts exactly one
proxy hop. These tests check that, seen through tlsfront, the app believes it
is served at https://localhost:<proxy_port>, that client-supplied forwarding
headers cannot spoof that, and that the proxy hardens the app's cookies.
"""

from __future__ import annotations

import json
from urllib.parse import urljoin

import requests

from conftest import DEMO_PASSWORD, DEMO_USER, DemoApp, Proxy

TIMEOUT = 10
REDIRECT_CODES = (301, 302, 303, 307, 308)
PROTECTED_MARKER = 'id="protected"'
LOGIN_FORM_MARKER = 'name="password"'


# --------------------------------------------------------------------------- helpers


def set_cookie_headers(resp: requests.Response) -> list[str]:
    """Raw Set-Cookie header lines, exactly as received."""
    return list(resp.raw.headers.getlist("Set-Cookie"))


def cookie_lines(resp: requests.Response, name: str) -> list[str]:
    return [h for h in set_cookie_headers(resp) if h.split("=", 1)[0].strip() == name]


def cookie_attrs(header: str) -> set[str]:
    """Lower-cased attribute names of one Set-Cookie line (Secure, HttpOnly, ...)."""
    return {part.split("=", 1)[0].strip().lower() for part in header.split(";")[1:] if part.strip()}


def login(
    client: requests.Session,
    base: str,
    password: str = DEMO_PASSWORD,
    remember: bool = False,
) -> requests.Response:
    data = {"username": DEMO_USER, "password": password}
    if remember:
        data["remember"] = "1"
    return client.post(f"{base}/login", data=data, allow_redirects=False, timeout=TIMEOUT)


def resolved_location(resp: requests.Response) -> str:
    assert resp.status_code in REDIRECT_CODES, f"expected a redirect, got {resp.status_code}"
    assert "Location" in resp.headers, "redirect without a Location header"
    return urljoin(resp.url, resp.headers["Location"])


def assert_not_upstream(location: str, app: DemoApp) -> None:
    assert not location.lower().startswith("http://"), f"plain-http Location leaked: {location!r}"
    assert f":{app.port}" not in location, f"upstream port leaked in Location: {location!r}"
    assert "127.0.0.1" not in location, f"upstream address leaked in Location: {location!r}"


def whoami(client: requests.Session, base: str, **kwargs) -> dict:
    r = client.get(f"{base}/whoami", allow_redirects=False, timeout=TIMEOUT, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


# --------------------------------------------------------------------------- tests


def test_unauthenticated_root_redirects_to_https_login(client, proxy: Proxy):
    base = proxy.base_url
    r = client.get(f"{base}/", allow_redirects=False, timeout=TIMEOUT)
    raw_location = r.headers.get("Location", "")
    assert_not_upstream(raw_location, proxy.app)
    assert resolved_location(r) == f"{base}/login"

    # Following it lands on the login form, over the proxy.
    r = client.get(f"{base}/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.url == f"{base}/login"
    assert LOGIN_FORM_MARKER in r.text


def test_login_sets_hardened_cookies_and_reaches_protected_page(client, proxy: Proxy):
    base = proxy.base_url
    r = login(client, base, remember=True)
    assert r.status_code == 302, r.text
    location = resolved_location(r)
    assert_not_upstream(r.headers["Location"], proxy.app)
    assert location == f"{base}/"

    all_cookies = set_cookie_headers(r)
    session_lines = cookie_lines(r, "session")
    remember_lines = cookie_lines(r, "remember_token")
    assert session_lines, f"no session cookie set on login; Set-Cookie: {all_cookies}"
    assert remember_lines, f"no remember_token cookie set on login; Set-Cookie: {all_cookies}"
    for line in session_lines + remember_lines:
        attrs = cookie_attrs(line)
        assert "secure" in attrs, f"cookie lacks Secure: {line!r}"
        assert "httponly" in attrs, f"cookie lacks HttpOnly: {line!r}"

    # Follow the redirect by hand: protected page, rendered with https URLs.
    r = client.get(location, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert PROTECTED_MARKER in r.text
    assert f"{base}/" in r.text  # request.url / external index as the app sees them

    info = whoami(client, base)
    assert info["authenticated"] is True
    assert info["user"] == DEMO_USER


def test_whoami_sees_public_https_url(client, proxy: Proxy):
    base = proxy.base_url
    info = whoami(client, base)
    assert info["url"] == f"{base}/whoami"
    assert info["scheme"] == "https"
    assert info["remote_addr"] == "127.0.0.1"
    assert info["host"] == f"localhost:{proxy.port}"
    assert info["external_index"] == f"{base}/"


def test_spoofed_forwarding_headers_are_not_trusted(client, proxy: Proxy):
    base = proxy.base_url
    spoofed = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Port": "6666",
        "Forwarded": "for=6.6.6.6",
    }
    r = client.get(f"{base}/whoami", headers=spoofed, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    info = r.json()

    assert info["remote_addr"] == "127.0.0.1"
    assert info["scheme"] == "https"
    assert info["host"] == f"localhost:{proxy.port}"
    assert info["url"] == f"{base}/whoami"
    assert info["external_index"] == f"{base}/"

    # Raw headers as the app received them, before ProxyFix. Repeated header
    # lines are joined with "," by the WSGI server, so "exactly one value"
    # means present and comma-free.
    headers = info["headers"]
    for name in ("X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port"):
        assert name in headers, f"proxy did not send {name}; app saw {headers}"
        assert "," not in headers[name], f"{name} has several values: {headers[name]!r}"
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Port"] == str(proxy.port)
    assert headers.get("X-Forwarded-For") == "127.0.0.1"

    blob = json.dumps(info)
    assert "6.6.6.6" not in blob, f"spoofed address reached the app: {headers}"
    assert "evil.example" not in blob, f"spoofed host reached the app: {headers}"
    assert "6666" not in blob, f"spoofed port reached the app: {headers}"


def test_absolute_redirect_uses_public_origin(client, proxy: Proxy):
    base = proxy.base_url
    r = client.get(f"{base}/go-absolute", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code in REDIRECT_CODES
    location = r.headers["Location"]
    assert location.startswith(f"{base}/"), location
    assert_not_upstream(location, proxy.app)


def test_session_survives_several_requests(client, proxy: Proxy):
    base = proxy.base_url
    # No "remember me": only the session cookie keeps us logged in.
    r = login(client, base, remember=False)
    assert r.status_code == 302, r.text
    assert not cookie_lines(r, "remember_token")
    for _ in range(3):
        r = client.get(f"{base}/", allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 200, f"lost the session: {r.status_code} {r.headers}"
        assert PROTECTED_MARKER in r.text


def test_logout_then_root_redirects_to_login(client, proxy: Proxy):
    base = proxy.base_url
    assert login(client, base, remember=True).status_code == 302
    assert whoami(client, base)["authenticated"] is True

    r = client.post(f"{base}/logout", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code in REDIRECT_CODES
    assert resolved_location(r) == f"{base}/login"
    assert_not_upstream(r.headers["Location"], proxy.app)

    r = client.get(f"{base}/", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code in REDIRECT_CODES
    assert resolved_location(r) == f"{base}/login"
    assert whoami(client, base)["authenticated"] is False


def test_wrong_password_is_401(client, proxy: Proxy):
    base = proxy.base_url
    r = login(client, base, password="not-the-password")
    assert r.status_code == 401
    assert LOGIN_FORM_MARKER in r.text
    assert not cookie_lines(r, "remember_token")
    assert whoami(client, base)["authenticated"] is False


def test_app_alone_does_not_set_secure(direct_client, demo_app: DemoApp):
    """Baseline without the proxy: Flask's defaults give no Secure flag, so the
    Secure attribute seen through tlsfront must come from the proxy."""
    base = demo_app.base_url
    r = login(direct_client, base, remember=True)
    assert r.status_code == 302, r.text
    session_lines = cookie_lines(r, "session")
    assert session_lines, f"no session cookie; Set-Cookie: {set_cookie_headers(r)}"
    for line in session_lines + cookie_lines(r, "remember_token"):
        assert "secure" not in cookie_attrs(line), f"app itself set Secure: {line!r}"

    info = whoami(direct_client, base)
    assert info["authenticated"] is True
    assert info["scheme"] == "http"
    assert info["url"] == f"{base}/whoami"
    assert info["headers"] == {"Host": f"127.0.0.1:{demo_app.port}"}
