"""Two apps in one browser: the demo app mounted at /admin, another app at /
(issue 12, item 2).

    Chromium --https://localhost:<port>/admin/...--> tlsfront --/...--> demo app (alice)
             --https://localhost:<port>/...--------> tlsfront --/...--> routes_app (bob)

    [[route]] path = "/admin", strip_prefix = true   -> mounted_demo.py
    [[route]] path = "/"                             -> routes_app.py (ProxyFix)

Both apps are Flask + Flask-Login with a session cookie of the same name,
``session``, and different secret keys: if one app's cookie landed on the
other's path, it would replace the other's session (or be refused by it), and
one login would log the other out. The browser's own cookie jar is the
evidence: two ``session`` cookies, the demo's with ``Path=/admin``, both
Secure and HttpOnly (added by tlsfront; neither app sets Secure).

Two variants:

* ``x_prefix``: the demo app honours X-Forwarded-Prefix (Werkzeug
  ``ProxyFix(x_prefix=1)``): it builds /admin/... URLs and sets its cookie on
  Path=/admin itself; tlsfront's rewriting finds nothing to change.
* ``no_x_prefix``: the app knows nothing of its mount point. Its redirects
  (``Location: /login``, ``/``) and cookie paths (``Path=/``, also on the
  cookie that logging out deletes) are put under /admin by tlsfront. What
  tlsfront does not touch is the HTML body: the app's forms post to /login
  and /logout, which would reach the *other* app. The test checks that this is
  so, then points the two forms at /admin/... before submitting them, i.e.
  this variant shows what the header rewriting alone achieves.

The browser is Debian's Chromium, launched as in test_browser.py (the same
pinning of tlsfront's leaf certificate: TLS verification stays on).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from routes_support import MOUNTED_DEMO, ROUTES_APP, Apps, TlsFront, start_tlsfront
from test_browser import launch, require_browser, spki_sha256_b64

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # require_browser() fails the test with the reason
    sync_playwright = None

ADMIN_USER, ADMIN_PASSWORD = "alice", "wonderland"
ROOT_USER, ROOT_PASSWORD = "bob", "builder"


@pytest.fixture(scope="module")
def playwright_instance():
    if sync_playwright is None:
        yield None
        return
    with sync_playwright() as p:
        yield p


@pytest.fixture
def apps(tmp_path):
    a = Apps(tmp=tmp_path)
    yield a
    a.stop_all()


def two_sites(apps: Apps, certdir: Path, tmp_path: Path, x_prefix: bool) -> TlsFront:
    admin = apps.werkzeug(
        "demo-at-admin",
        MOUNTED_DEMO,
        {
            "X_PREFIX": "1" if x_prefix else "0",
            "SECRET_KEY": "admin-app-secret",
            "DEMO_USER": ADMIN_USER,
            "DEMO_PASSWORD": ADMIN_PASSWORD,
        },
    )
    root = apps.werkzeug(
        "root-app",
        ROUTES_APP,
        {
            "APP_NAME": "root",
            "PROXY_FIX": "1",
            "SECRET_KEY": "root-app-secret",
            "APP_USER": ROOT_USER,
            "APP_PASSWORD": ROOT_PASSWORD,
        },
    )
    return start_tlsfront(
        tmp_path / "tlsfront",
        certdir,
        "[[route]]\n"
        'path = "/admin"\n'
        "strip_prefix = true\n"
        f'url = "{admin.server_url}"\n'
        "[[route]]\n"
        'path = "/"\n'
        f'url = "{root.server_url}"\n',
    )


def submit(page, form: str, mount: str | None, app_action: str) -> None:
    """Submits `form` and waits for the navigation. With `mount`, the app is
    unaware of its prefix: its form posts to `app_action` (outside the mount,
    checked here), so the form is pointed at mount + app_action first."""
    action = page.get_attribute(form, "action")
    if mount is None:
        assert action == app_action, action
    else:
        assert action == app_action, f"expected the unprefixed {app_action!r} the app built, got {action!r}"
        page.eval_on_selector(form, "(f, a) => f.setAttribute('action', a)", mount + app_action)
    with page.expect_navigation():
        page.click(f"{form} button[type=submit]" if form.startswith("form#") else f"{form} button")


def session_cookies(ctx) -> dict[str, dict]:
    """The browser's `session` cookies, by path."""
    found: dict[str, dict] = {}
    for c in ctx.cookies():
        if c["name"] == "session":
            assert c["path"] not in found, f"two session cookies on {c['path']}: {ctx.cookies()}"
            found[c["path"]] = c
    return found


def whoami(page, url: str) -> dict:
    resp = page.goto(url)
    assert resp is not None and resp.status == 200, resp
    return resp.json()


@pytest.mark.parametrize("x_prefix", [True, False], ids=["x_prefix", "no_x_prefix"])
def test_two_apps_keep_their_own_sessions_in_one_browser(
    playwright_instance, apps, certdir, tmp_path, x_prefix: bool
):
    chromium = require_browser()
    tf = two_sites(apps, certdir, tmp_path, x_prefix)
    base = tf.base_url
    admin = f"{base}/admin"
    # The demo app's own templates use url_for(): /admin/... only with x_prefix.
    mount = None if x_prefix else "/admin"
    app_prefix = "/admin" if x_prefix else ""
    pin = spki_sha256_b64(certdir / "cert.pem")
    ctx = launch(playwright_instance, chromium, tmp_path / "profile", [f"--ignore-certificate-errors-spki-list={pin}"])
    try:
        page = ctx.new_page()

        # 1. The mounted app: /admin/ redirects to its login page, under /admin.
        resp = page.goto(f"{admin}/")
        assert resp is not None and resp.status == 200, resp
        assert page.url == f"{admin}/login", page.url
        page.fill('input[name="username"]', ADMIN_USER)
        page.fill('input[name="password"]', ADMIN_PASSWORD)
        submit(page, "form", mount, f"{app_prefix}/login")
        assert page.url == f"{admin}/", page.url
        assert page.inner_text("#user") == ADMIN_USER
        # What the app believes its URL is: with x_prefix it knows the mount.
        assert page.inner_text("#url") == (f"{admin}/" if x_prefix else f"{base}/")
        assert page.inner_text("#scheme") == "https"

        # 2. The app at /: its own login, its own session cookie.
        resp = page.goto(f"{base}/")
        assert resp is not None and resp.status == 200, resp
        assert page.url == f"{base}/login", page.url
        assert page.inner_text("#app") == "root"
        page.fill('input[name="username"]', ROOT_USER)
        page.fill('input[name="password"]', ROOT_PASSWORD)
        submit(page, "form#login", None, "/login")
        assert page.url == f"{base}/", page.url
        assert page.inner_text("#user") == ROOT_USER

        # 3. Two `session` cookies in the jar, one per app, both hardened.
        jar = session_cookies(ctx)
        assert set(jar) == {"/admin", "/"}, f"session cookies by path: {jar}"
        for c in jar.values():
            assert c["secure"] is True, f"stored without Secure: {c}"
            assert c["httpOnly"] is True, f"stored without HttpOnly: {c}"
            assert c["domain"] == "localhost", c
        assert jar["/admin"]["value"] != jar["/"]["value"]

        # 4. Both sessions survive reloads, each app sees its own user.
        for _ in range(2):
            page.goto(f"{admin}/")
            resp = page.reload()
            assert resp is not None and resp.status == 200
            assert page.url == f"{admin}/", page.url
            assert page.inner_text("#user") == ADMIN_USER
            page.goto(f"{base}/")
            resp = page.reload()
            assert resp is not None and resp.status == 200
            assert page.url == f"{base}/", page.url
            assert page.inner_text("#user") == ROOT_USER
        assert whoami(page, f"{admin}/whoami")["user"] == ADMIN_USER
        assert whoami(page, f"{base}/whoami")["user"] == ROOT_USER

        # 5. Logging out of /admin leaves / logged in.
        page.goto(f"{admin}/")
        submit(page, 'form[action$="/logout"]', mount, f"{app_prefix}/logout")
        assert page.url == f"{admin}/login", page.url
        assert whoami(page, f"{admin}/whoami")["authenticated"] is False
        info = whoami(page, f"{base}/whoami")
        assert info["authenticated"] is True and info["user"] == ROOT_USER, info
        assert "/" in session_cookies(ctx), "the root app's cookie is gone"

        # 6. ... and the other way round: back into /admin, out of /.
        page.goto(f"{admin}/login")
        page.fill('input[name="username"]', ADMIN_USER)
        page.fill('input[name="password"]', ADMIN_PASSWORD)
        submit(page, "form", mount, f"{app_prefix}/login")
        assert page.inner_text("#user") == ADMIN_USER
        page.goto(f"{base}/")
        submit(page, "form#logout", None, "/logout")
        assert page.url == f"{base}/login", page.url
        assert whoami(page, f"{base}/whoami")["authenticated"] is False
        info = whoami(page, f"{admin}/whoami")
        assert info["authenticated"] is True and info["user"] == ADMIN_USER, info
        for c in ctx.cookies():  # whatever is left is still hardened
            assert c["secure"] is True and c["httpOnly"] is True, c
    finally:
        ctx.close()
        tf.proc.terminate()
        tf.proc.wait(timeout=10)
