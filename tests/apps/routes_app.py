"""Flask + Flask-Login app for the `[[route]]` end-to-end tests.

One file serves three roles, chosen by environment variables:

* the second site of the two-apps browser test (mounted at ``/`` next to the
  demo app at ``/admin``): its own secret key, its own session cookie of the
  same name (``session``), its own user;
* the Gunicorn app of the Unix-socket test: no ProxyFix at all, so whatever
  it reports about scheme and host is Gunicorn's own doing;
* one of the three servers of the deploy test: every answer says which
  server (``SERVER_ID``) and which process it came from.

Environment:
    APP_NAME        shown on pages and in /whoami ("root")
    SERVER_ID       shown in /whoami and /server ("0")
    BOOT_ID         shown in /server: which start of the server answered
    SECRET_KEY      Flask secret key (differs per app: sessions are not shared)
    APP_USER        user name (bob); APP_PASSWORD (builder)
    PROXY_FIX=0|1   wrap in ProxyFix(x_for=1, x_proto=1, x_host=1, x_port=1)
    X_PREFIX=0|1    ... and x_prefix=1 (honour X-Forwarded-Prefix)
    HOST, PORT      for ``python routes_app.py`` (Werkzeug's threaded server)

Routes:
    /          logged in: a page with the user; else redirect to /login
    /login     GET form (action = url_for('login')), POST APP_USER/APP_PASSWORD
    /logout    POST: log out, redirect to /login
    /whoami    JSON: what the app believes about the request
    /server    JSON: {"server": SERVER_ID, "boot": BOOT_ID} (the deploy test's GET)
    /healthz   "ok"
"""

from __future__ import annotations

import hmac
import os

from flask import Flask, jsonify, redirect, render_template_string, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.middleware.proxy_fix import ProxyFix


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


APP_NAME = os.environ.get("APP_NAME", "root")
SERVER_ID = os.environ.get("SERVER_ID", "0")
# Which start of this server answered (the deploy test restarts servers).
BOOT_ID = os.environ.get("BOOT_ID", "")

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "routes-app-insecure-secret")

if env_flag("PROXY_FIX"):
    app.wsgi_app = ProxyFix(
        app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1 if env_flag("X_PREFIX") else 0
    )

login_manager = LoginManager(app)
login_manager.login_view = "login"

USERS = {os.environ.get("APP_USER", "bob"): os.environ.get("APP_PASSWORD", "builder")}


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return User(user_id) if user_id in USERS else None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ app_name }}</title></head><body>
<p>app: <span id="app">{{ app_name }}</span></p>
{% if current_user.is_authenticated %}
<h1 id="protected">Protected page of {{ app_name }}</h1>
<p>Hello, <strong id="user">{{ current_user.id }}</strong>.</p>
<form id="logout" method="post" action="{{ url_for('logout') }}"><button type="submit">Log out</button></form>
{% else %}
<h1>Log in to {{ app_name }}</h1>
{% if error %}<p id="error">{{ error }}</p>{% endif %}
<form id="login" method="post" action="{{ url_for('login') }}">
  <p><label>Username <input name="username"></label></p>
  <p><label>Password <input name="password" type="password"></label></p>
  <p><button type="submit">Log in</button></p>
</form>
{% endif %}
</body></html>
"""


def page(error: str | None = None, status: int = 200):
    return render_template_string(PAGE, app_name=APP_NAME, error=error), status


@app.get("/")
def index():
    if not current_user.is_authenticated:
        return redirect(url_for("login"))
    return page()


@app.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return page()
    username = request.form.get("username", "")
    expected = USERS.get(username)
    given = request.form.get("password", "")
    if expected is not None and hmac.compare_digest(expected.encode(), given.encode()):
        login_user(User(username))
        return redirect(url_for("index"))
    return page(error="Invalid username or password.", status=401)


@app.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("login"))


@app.get("/whoami")
def whoami():
    authenticated = bool(current_user.is_authenticated)
    return jsonify(
        {
            "app": APP_NAME,
            "server": SERVER_ID,
            "authenticated": authenticated,
            "user": current_user.id if authenticated else None,
            "scheme": request.scheme,
            "is_secure": request.is_secure,
            "url": request.url,
            "host": request.host,
            "script_root": request.script_root,
            "external_index": url_for("index", _external=True),
            "remote_addr": request.remote_addr,
            # As received (before any ProxyFix): the proxy's side of the story.
            "x_forwarded_for": request.headers.get("X-Forwarded-For"),
            "x_forwarded_proto": request.headers.get("X-Forwarded-Proto"),
            "x_forwarded_prefix": request.headers.get("X-Forwarded-Prefix"),
            "wsgi_server": request.environ.get("SERVER_SOFTWARE"),
        }
    )


@app.get("/server")
def server():
    return jsonify({"server": SERVER_ID, "boot": BOOT_ID})


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
