"""Flask + Flask-Login sample app for `tlsfront doctor` tests.

Every proxy-related behaviour is switched by an environment variable, so one
file gives both the "broken behind a proxy" and the "fixed" variants:

    PORT=5001             port to listen on (127.0.0.1 only)
    PROXY_FIX=0|1         wrap the app in werkzeug's
                          ProxyFix(x_for=1, x_proto=1, x_host=1, x_port=1)
    COOKIE_SECURE=0|1     SESSION_COOKIE_SECURE and REMEMBER_COOKIE_SECURE
    SAMESITE=Lax          SESSION_COOKIE_SAMESITE and REMEMBER_COOKIE_SAMESITE
                          (empty: Flask's default, no SameSite attribute)
    TRUSTED_HOSTS=a,b     Flask's TRUSTED_HOSTS (Flask >= 3.1): requests whose
                          host (after ProxyFix) is not listed get 400 Bad
                          Request, so a forged X-Forwarded-Host is refused
    CHURN=0|1             simulate a bug: set a session-like cookie
                          ``app_session`` with a fresh random value on every
                          response

Routes (GET unless noted):
    /          not logged in: ``redirect(url_for('login', next=request.url))``
               (Flask-Login style; without ProxyFix ``next`` is an http:// URL);
               logged in: a page showing request.url
    /login     login form; the session gets a CSRF token (so GET sets the
               session cookie) and the form's action is
               ``url_for('login', _external=True)`` (an absolute URL in the body)
    POST /login  alice / wonderland
    /whoami    JSON: url_for('index', _external=True), request.url, remote_addr
    /healthz   "ok"
"""

from __future__ import annotations

import hmac
import os
import secrets

from flask import Flask, jsonify, redirect, render_template_string, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user
from werkzeug.middleware.proxy_fix import ProxyFix


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "doctor-test-insecure-secret")

if env_flag("COOKIE_SECURE"):
    app.config["SESSION_COOKIE_SECURE"] = True
    app.config["REMEMBER_COOKIE_SECURE"] = True

SAMESITE = os.environ.get("SAMESITE", "").strip() or None
if SAMESITE:
    app.config["SESSION_COOKIE_SAMESITE"] = SAMESITE
    app.config["REMEMBER_COOKIE_SAMESITE"] = SAMESITE

_trusted = [h.strip() for h in os.environ.get("TRUSTED_HOSTS", "").split(",") if h.strip()]
if _trusted:
    app.config["TRUSTED_HOSTS"] = _trusted

if env_flag("PROXY_FIX"):
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)

CHURN = env_flag("CHURN")

login_manager = LoginManager(app)
login_manager.login_view = "login"
# Flask-Login's default "basic" session protection rewrites an anonymous but
# non-empty session once (``_fresh = False``) on the second request, because
# the session carries no identifier yet. That one-off rewrite is not the bug
# CHURN simulates, so keep it out of the sample app.
login_manager.session_protection = None

USERS = {"alice": "wonderland"}


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name
        self.name = name


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return User(user_id) if user_id in USERS else None


@app.after_request
def churn_cookie(response):
    if CHURN:
        # The bug: a new "session" on every response, so the client never
        # keeps one (e.g. a session id regenerated per request).
        response.set_cookie(
            "app_session",
            secrets.token_urlsafe(16),
            secure=app.config.get("SESSION_COOKIE_SECURE", False),
            httponly=True,
            samesite=SAMESITE,
        )
    return response


LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Log in</title></head>
<body>
<h1>Log in</h1>
{% if error %}<p id="error">{{ error }}</p>{% endif %}
<form method="post" action="{{ url_for('login', _external=True) }}">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <input type="hidden" name="next" value="{{ next_url }}">
  <p><label>Username <input name="username"></label></p>
  <p><label>Password <input name="password" type="password"></label></p>
  <p><button type="submit">Log in</button></p>
</form>
</body></html>
"""

INDEX_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Home</title></head>
<body>
<h1 id="protected">Hello, {{ name }}</h1>
<p>You are at <code id="url">{{ request.url }}</code></p>
</body></html>
"""


def csrf_token() -> str:
    # Stored once per session: the first GET /login sets the session cookie,
    # later ones leave it alone (no churn).
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(16)
    return session["csrf_token"]


@app.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("login", next=request.url))
    return render_template_string(INDEX_PAGE, name=current_user.name)


@app.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template_string(
            LOGIN_PAGE, error=None, csrf=csrf_token(), next_url=request.args.get("next", "")
        )
    form_token = request.form.get("csrf_token", "")
    if not hmac.compare_digest(form_token.encode(), session.get("csrf_token", "").encode()):
        return "CSRF token missing or wrong", 400
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    expected = USERS.get(username)
    if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
        login_user(User(username), remember=request.form.get("remember") == "1")
        return redirect(url_for("index"))
    return (
        render_template_string(
            LOGIN_PAGE,
            error="Invalid username or password.",
            csrf=csrf_token(),
            next_url=request.form.get("next", ""),
        ),
        401,
    )


@app.get("/whoami")
def whoami():
    return jsonify(
        {
            "external_index": url_for("index", _external=True),
            "url": request.url,
            "remote_addr": request.remote_addr,
            "authenticated": bool(current_user.is_authenticated),
        }
    )


@app.get("/healthz")
def healthz():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


if __name__ == "__main__":
    app.run(
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "5001")),
        threaded=True,
        debug=False,
        use_reloader=False,
    )
