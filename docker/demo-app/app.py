"""tlsfront demo app: a small Flask + Flask-Login application meant to sit
behind the tlsfront TLS-terminating reverse proxy.

It deliberately uses Flask's default (insecure-for-HTTPS) session cookie
settings -- no ``Secure`` flag -- so that the proxy's cookie hardening and
its X-Forwarded-* handling can be observed end to end.

Run directly (Flask's built-in threaded server)::

    HOST=127.0.0.1 PORT=8000 python docker/demo-app/app.py

or with gunicorn::

    gunicorn --chdir docker/demo-app -b 127.0.0.1:8000 app:app

Environment:
    HOST, PORT            bind address for ``python app.py`` (127.0.0.1, 8000)
    SECRET_KEY            Flask secret key (insecure dev default)
    DEMO_USER             demo username (alice)
    DEMO_PASSWORD         demo password (wonderland)
    DEMO_COOKIE_SECURE=1  make the app itself set Secure on its cookies
                          (off by default: the proxy is expected to add it)

WebSocket endpoints (Flask-Sock, on top of simple-websocket):
    /ws          no login; echoes every message back exactly, except the text
                 message ``whoami``, answered with a JSON object describing
                 the handshake request as the app sees it (after ProxyFix)
    /ws-private  login required; sends ``hello <username>`` on connect, or
                 closes with 1008 (policy violation) if not authenticated
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import threading

from flask import (
    Flask,
    jsonify,
    redirect,
    render_template_string,
    request,
    url_for,
)
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_user,
    logout_user,
)
from flask_sock import Sock
from markupsafe import Markup
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get(
    "SECRET_KEY", "dev-insecure-secret-key-change-me"
)

# Flask defaults are SESSION_COOKIE_SECURE=False, SESSION_COOKIE_HTTPONLY=True,
# SESSION_COOKIE_SAMESITE=None (Flask-Login's remember cookie: REMEMBER_COOKIE_
# SECURE=False, REMEMBER_COOKIE_HTTPONLY=True). Leave them alone unless asked.
if os.environ.get("DEMO_COOKIE_SECURE") == "1":
    app.config["SESSION_COOKIE_SECURE"] = True
    app.config["REMEMBER_COOKIE_SECURE"] = True

# Raw Set-Cookie headers the app most recently emitted, per user (demo only:
# browsers never send cookie attributes back, so this is how the protected
# page can show what the *app* said, before the proxy touched it).
# Flask writes the session cookie in save_session(), which runs *after* all
# after_request hooks (and Flask-Login's remember-cookie hook is itself an
# after_request hook), so the headers are captured at the WSGI layer instead.
_emitted_lock = threading.Lock()
_emitted_set_cookies: dict[str, list[str]] = {}
_USER_ENVIRON_KEY = "tlsfront_demo.user"


class RecordSetCookie:
    """WSGI middleware recording the final Set-Cookie headers of responses
    to authenticated requests."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        def _start_response(status, headers, exc_info=None):
            user = environ.get(_USER_ENVIRON_KEY)
            cookies = [v for k, v in headers if k.lower() == "set-cookie"]
            if user and cookies:
                with _emitted_lock:
                    _emitted_set_cookies[user] = cookies
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, _start_response)


# Trust exactly one proxy (tlsfront) for each forwarded header.
app.wsgi_app = ProxyFix(
    RecordSetCookie(app.wsgi_app), x_for=1, x_proto=1, x_host=1, x_port=1
)

login_manager = LoginManager(app)
login_manager.login_view = "login"

sock = Sock(app)


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name
        self.name = name


USERS = {
    os.environ.get("DEMO_USER", "alice"): os.environ.get("DEMO_PASSWORD", "wonderland"),
}


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    if user_id in USERS:
        return User(user_id)
    return None


@app.after_request
def _tag_user(response):
    # Tell RecordSetCookie which user this response belongs to.
    if current_user.is_authenticated:
        request.environ[_USER_ENVIRON_KEY] = current_user.get_id()
    return response


# Names of the request headers reported raw (before ProxyFix) by /whoami.
_FORWARD_HEADER_PREFIX = "HTTP_X_FORWARDED_"
_EXTRA_FORWARD_HEADERS = ("HTTP_X_REAL_IP", "HTTP_FORWARDED")


def _environ_key_to_header(key: str) -> str:
    return key[len("HTTP_"):].replace("_", "-").title()


def raw_forwarding_headers() -> dict[str, str]:
    """Forwarding-related request headers exactly as the WSGI server received
    them, i.e. before ProxyFix rewrote anything.

    ProxyFix (Werkzeug >= 1.0) stores the environ values it *overwrites*
    (REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST, SERVER_NAME, SERVER_PORT,
    SCRIPT_NAME) in a single dict under ``environ['werkzeug.proxy_fix.orig']``.
    It never modifies the HTTP_X_FORWARDED_* / HTTP_FORWARDED keys, so those
    are read straight from the environ. Only Host needs the saved original.
    (The old per-key ``werkzeug.proxy_fix.orig_*`` environ keys were removed in
    Werkzeug 1.0, despite a stale docstring still mentioning them.)

    Note: WSGI servers join repeated header lines into one comma-separated
    value (Werkzeug's dev server uses ","), so duplicates show up as a list.
    """
    environ = request.environ
    headers: dict[str, str] = {}
    for key in sorted(environ):
        if key.startswith(_FORWARD_HEADER_PREFIX) or key in _EXTRA_FORWARD_HEADERS:
            headers[_environ_key_to_header(key)] = environ[key]
    orig = environ.get("werkzeug.proxy_fix.orig")
    if isinstance(orig, dict) and "HTTP_HOST" in orig:
        host = orig["HTTP_HOST"]
    else:
        host = environ.get("HTTP_HOST")
    if host is not None:
        headers["Host"] = host
    return headers


def expected_cookie_attributes() -> dict[str, str]:
    """The attributes Flask puts on the session cookie, per its config."""
    cfg = app.config
    attrs = [f"Path={cfg.get('SESSION_COOKIE_PATH') or cfg.get('APPLICATION_ROOT') or '/'}"]
    if cfg.get("SESSION_COOKIE_DOMAIN"):
        attrs.append(f"Domain={cfg['SESSION_COOKIE_DOMAIN']}")
    if cfg.get("SESSION_COOKIE_SECURE"):
        attrs.append("Secure")
    if cfg.get("SESSION_COOKIE_HTTPONLY"):
        attrs.append("HttpOnly")
    if cfg.get("SESSION_COOKIE_SAMESITE"):
        attrs.append(f"SameSite={cfg['SESSION_COOKIE_SAMESITE']}")
    return {
        "SESSION_COOKIE_NAME": str(cfg.get("SESSION_COOKIE_NAME")),
        "SESSION_COOKIE_SECURE": str(cfg.get("SESSION_COOKIE_SECURE")),
        "SESSION_COOKIE_HTTPONLY": str(cfg.get("SESSION_COOKIE_HTTPONLY")),
        "SESSION_COOKIE_SAMESITE": str(cfg.get("SESSION_COOKIE_SAMESITE")),
        "attributes": "; ".join(attrs),
    }


LAYOUT = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }} - tlsfront demo</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
code { word-break: break-all; }
</style></head>
<body>
{{ body }}
</body></html>
"""

LOGIN_FORM = """
<h1>Log in</h1>
{% if error %}<p id="error" style="color: #b00">{{ error }}</p>{% endif %}
{% if current_user.is_authenticated %}
<p>You are already logged in as {{ current_user.name }}. <a href="{{ url_for('index') }}">Continue</a></p>
{% endif %}
<form method="post" action="{{ url_for('login') }}">
  <p><label>Username <input name="username" autocomplete="username" value="{{ username or '' }}"></label></p>
  <p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>
  <p><label><input type="checkbox" name="remember" value="1"> Remember me</label></p>
  <p><button type="submit">Log in</button></p>
</form>
"""

PROTECTED_PAGE = """
<h1 id="protected">Protected page</h1>
<p>Hello, <strong id="user">{{ current_user.name }}</strong>.</p>
<form method="post" action="{{ url_for('logout') }}"><button type="submit">Log out</button></form>

<h2>Request as the app sees it (after ProxyFix)</h2>
<table>
<tr><th>request.url</th><td><code id="url">{{ request.url }}</code></td></tr>
<tr><th>request.remote_addr</th><td><code id="remote_addr">{{ request.remote_addr }}</code></td></tr>
<tr><th>request.scheme</th><td><code id="scheme">{{ request.scheme }}</code></td></tr>
<tr><th>request.host</th><td><code id="host">{{ request.host }}</code></td></tr>
<tr><th>url_for('index', _external=True)</th><td><code id="external_index">{{ external_index }}</code></td></tr>
</table>

<h2>Forwarding headers as received (before ProxyFix)</h2>
<table>
{% for name, value in raw_headers.items() %}
<tr><th>{{ name }}</th><td><code>{{ value }}</code></td></tr>
{% else %}
<tr><td colspan="2"><em>none</em></td></tr>
{% endfor %}
</table>

<h2>Cookies the browser sent</h2>
<p>Browsers send only <code>name=value</code> back, never attributes.</p>
<table>
{% for name, value in request.cookies.items() %}
<tr><th>{{ name }}</th><td><code>{{ value }}</code></td></tr>
{% else %}
<tr><td colspan="2"><em>none</em></td></tr>
{% endfor %}
</table>

<h2>Session cookie attributes the app emits</h2>
<p>From the Flask config (the proxy may add more, e.g. <code>Secure</code>):</p>
<table>
{% for name, value in cookie_cfg.items() %}
<tr><th>{{ name }}</th><td><code>{{ value }}</code></td></tr>
{% endfor %}
</table>
<p>Raw <code>Set-Cookie</code> headers the app last emitted for you (before the proxy):</p>
<ul>
{% for sc in emitted %}<li><code>{{ sc }}</code></li>{% else %}<li><em>none recorded</em></li>{% endfor %}
</ul>
"""


def page(title: str, body_template: str, status: int = 200, **ctx):
    body = render_template_string(body_template, **ctx)
    return render_template_string(LAYOUT, title=title, body=Markup(body)), status


@app.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("login"))
    with _emitted_lock:
        emitted = list(_emitted_set_cookies.get(current_user.get_id(), []))
    return page(
        "Protected",
        PROTECTED_PAGE,
        external_index=url_for("index", _external=True),
        raw_headers=raw_forwarding_headers(),
        cookie_cfg=expected_cookie_attributes(),
        emitted=emitted,
    )


@app.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return page("Log in", LOGIN_FORM, error=None, username=None)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    remember = request.form.get("remember", "").lower() in ("1", "on", "true", "yes")
    expected = USERS.get(username)
    if expected is not None and hmac.compare_digest(
        expected.encode("utf-8"), password.encode("utf-8")
    ):
        login_user(User(username), remember=remember)
        return redirect(url_for("index"))
    return page(
        "Log in",
        LOGIN_FORM,
        status=401,
        error="Invalid username or password.",
        username=username,
    )


@app.get("/go-absolute")
def go_absolute():
    # Absolute redirect: exercises Location built from the forwarded host/proto.
    return redirect(url_for("index", _external=True))


@app.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("login"))


@app.get("/whoami")
def whoami():
    authenticated = bool(current_user.is_authenticated)
    return jsonify(
        {
            "authenticated": authenticated,
            "user": current_user.name if authenticated else None,
            "url": request.url,
            "remote_addr": request.remote_addr,
            "scheme": request.scheme,
            "host": request.host,
            "external_index": url_for("index", _external=True),
            "headers": raw_forwarding_headers(),
            # What the WSGI server itself saw (the proxy's side of the socket).
            "proxy_fix_orig": request.environ.get("werkzeug.proxy_fix.orig"),
        }
    )


def ws_whoami() -> str:
    """The WebSocket handshake request as the app sees it (after ProxyFix).

    Note: Werkzeug's *router* treats an upgrade request as scheme ``ws`` /
    ``wss`` (that is how it matches websocket rules), but ``request.scheme``
    and ``request.url`` come from ``wsgi.url_scheme``, which ProxyFix sets
    from X-Forwarded-Proto: behind a TLS proxy they read ``https``.
    """
    return json.dumps(
        {
            "scheme": request.scheme,
            "url": request.url,
            "remote_addr": request.remote_addr,
            "host": request.host,
            "x_forwarded_proto": request.headers.get("X-Forwarded-Proto"),
            "is_secure": request.is_secure,
        }
    )


def _end_werkzeug_websocket(ws) -> None:
    """Finish a WebSocket session on Werkzeug's dev server without garbage.

    Flask-Sock answers the handshake on the raw socket itself, but once the
    handler returns, Werkzeug's dev server still writes a plain
    ``HTTP/1.1 200 OK`` response onto that same socket -- i.e. *after* the
    WebSocket close frame, where clients see it as an invalid frame (known
    Flask-Sock issue; browsers report "Invalid frame header"). So: wait for the
    close handshake to finish (simple-websocket's reader thread sends the
    reply to a client's close frame, or reads the client's reply to ours),
    then shut the socket's write side. The client gets the close frame and
    then EOF, and Werkzeug's stray response fails with EPIPE, which it treats
    as a dropped connection and ignores.
    """
    if getattr(ws, "mode", None) != "werkzeug":
        return
    try:
        if ws.connected:
            ws.close()
    except Exception:  # already closed
        pass
    ws.thread.join(timeout=5)
    try:
        request.environ["werkzeug.socket"].shutdown(socket.SHUT_WR)
    except OSError:
        pass


@sock.route("/ws")
def ws_echo(ws):
    try:
        while True:
            message = ws.receive()
            if message is None:  # connection closed
                return
            if message == "whoami":
                ws.send(ws_whoami())
            else:
                ws.send(message)
    finally:
        _end_werkzeug_websocket(ws)


# RFC 6455 close code 1008: policy violation (here: not logged in).
WS_CLOSE_POLICY_VIOLATION = 1008


@sock.route("/ws-private")
def ws_private(ws):
    try:
        if not current_user.is_authenticated:
            ws.close(reason=WS_CLOSE_POLICY_VIOLATION, message="login required")
            return
        ws.send(f"hello {current_user.name}")
        while True:
            message = ws.receive()
            if message is None:
                return
            ws.send(message)
    finally:
        _end_werkzeug_websocket(ws)


@app.get("/healthz")
def healthz():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


if __name__ == "__main__":
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        threaded=True,
        debug=False,
        use_reloader=False,
    )
