"""`[auth]` (issue 20) end to end: HTTP basic auth from an htpasswd file and
forward auth to a real auth service, through a real tlsfront.

    requests --https--> tlsfront --http--> echo_app (counts and echoes what it got)
                           \\--GET /verify (http or unix:)--> auth_app

htpasswd lines come from Debian's `htpasswd -B` ($2y$) and from Python's
bcrypt ($2b$); the rejected formats from `htpasswd -m/-s/-p/-d`. The echo app
returns the raw header list it received, so "the app saw X / never saw Y" is
observed on the wire; "nothing reaches the app" is its request counter.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import bcrypt
import pytest

from protect_aa_support import (
    TIMEOUT,
    Front,
    auth_last,
    check,
    config_text,
    count_of,
    counts,
    header_values,
    start_auth_tcp,
    start_auth_unix,
    start_echo,
)
from protect_aa_support import start_front as _start_front
from routes_support import Apps

HTPASSWD = shutil.which("htpasswd") or "/usr/bin/htpasswd"
REALM = "Staff Only"
COPY = 'copy_headers = ["Remote-User", "Remote-Groups", "Remote-Email"]\n'


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def uniq(prefix: str) -> str:
    return f"/{prefix}-{uuid.uuid4().hex[:10]}"


def run_htpasswd(*args: str) -> None:
    res = subprocess.run([HTPASSWD, *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, (args, res.stdout, res.stderr)


def bcrypt_line(user: str, password: str) -> str:
    # Cost 6: a real $2b$ hash that a debug build still checks quickly.
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()
    assert h.startswith("$2b$"), h
    return f"{user}:{h}\n"


def make_htpasswd(path: Path) -> Path:
    """alice:secret by `htpasswd -B` ($2y$), bob:builder by Python bcrypt ($2b$)."""
    run_htpasswd("-B", "-b", "-c", str(path), "alice", "secret")
    text = path.read_text()
    assert text.startswith("alice:$2y$"), text
    with open(path, "a") as f:
        if not text.endswith("\n"):
            f.write("\n")
        f.write(bcrypt_line("bob", "builder"))
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    a = Apps(tmp=tmp_path_factory.mktemp("protect-auth-apps"))
    yield a
    a.stop_all()


@pytest.fixture(scope="module")
def echo(apps):
    return start_echo(apps)


@pytest.fixture(scope="module")
def auth(apps):
    return start_auth_tcp(apps, slow_seconds=4.0)


@pytest.fixture
def fronts():
    started: list[Front] = []
    yield started
    for f in started:
        f.stop()


@pytest.fixture
def front_with(fronts, certdir, echo, tmp_path):
    def make(body: str, **kw) -> Front:
        n = len(fronts)
        f = _start_front(
            tmp_path / f"tlsfront{n}", certdir, config_text(certdir, echo.server_url, body, **kw), name=f"tlsfront-{n}"
        )
        fronts.append(f)
        return f

    return make


@pytest.fixture
def htpasswd_file(tmp_path) -> Path:
    return make_htpasswd(tmp_path / "htpasswd")


@pytest.fixture
def basic_front(front_with, htpasswd_file) -> Front:
    return front_with(f'[auth]\nbasic = "{htpasswd_file}"\nrealm = "{REALM}"\n')


@pytest.fixture
def sockdir():
    d = Path(tempfile.mkdtemp(prefix="tf-auth-", dir="/tmp"))  # short: a socket path fits in 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def get(front: Front, path: str, headers: dict | None = None, method: str = "GET", data=None):
    with front.session() as s:
        return s.request(method, front.url(path), headers=headers or {}, data=data, timeout=TIMEOUT, allow_redirects=False)


def seen(r) -> list:
    """The raw header list the echo app received, from its JSON answer."""
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return r.json()["headers"]


# =========================================================================== basic


def test_basic_without_credentials_is_401_with_the_realm(basic_front, echo):
    path = uniq("b-none")
    before = counts(echo)["total"]
    r = get(basic_front, path)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert r.headers.get("WWW-Authenticate") == f'Basic realm="{REALM}", charset="UTF-8"', dict(r.headers)
    assert count_of(echo, path) == 0
    assert counts(echo)["total"] == before, "an unauthenticated request reached the app"
    basic_front.wait_refused("auth", 1)


@pytest.mark.parametrize(
    "user,password",
    [("alice", "wrong"), ("bob", "secret"), ("carol", "secret"), ("alice", "")],
    ids=["wrong-password", "other-users-password", "unknown-user", "empty-password"],
)
def test_basic_wrong_credentials_are_401(basic_front, echo, user, password):
    path = uniq("b-wrong")
    r = get(basic_front, path, headers=basic(user, password))
    assert r.status_code == 401, (user, password, r.status_code, r.text[:300])
    assert r.headers.get("WWW-Authenticate", "").startswith(f'Basic realm="{REALM}"'), dict(r.headers)
    assert count_of(echo, path) == 0
    basic_front.wait_refused("auth", 1)


def test_basic_right_credentials_reach_the_app_as_x_forwarded_user(basic_front, echo):
    path = uniq("b-alice")
    r = get(basic_front, path, headers=basic("alice", "secret"))
    headers = seen(r)
    assert header_values(headers, "X-Forwarded-User") == ["alice"], headers
    assert header_values(headers, "Authorization") == [], "the client's Authorization reached the app"
    # The $2b$ line from Python's bcrypt works as well as htpasswd's $2y$.
    r = get(basic_front, path, headers=basic("bob", "builder"))
    assert header_values(seen(r), "X-Forwarded-User") == ["bob"]
    assert count_of(echo, path) == 2
    assert basic_front.refused("auth") == 0
    # The access log's user field names the user.
    line = basic_front.wait_access(path, 200)
    assert line.group("user") in ("alice", "bob"), line.group(0)
    users = sorted(m.group("user") for m in basic_front.access_lines() if m.group("path") == path)
    assert users == ["alice", "bob"], users


# From an untrusted client tlsfront already drops x-forwarded-* names; from a
# trusted proxy (127.0.0.1 listed in trusted_proxies) it keeps forwarding
# headers, so only the auth feature's own rule can remove X-Forwarded-User.
TRUSTED = {"untrusted-client": "", "trusted-proxy": 'trusted_proxies = ["127.0.0.1/32"]'}


@pytest.mark.parametrize("forwarded", TRUSTED.values(), ids=TRUSTED.keys())
def test_client_x_forwarded_user_never_reaches_the_app(front_with, htpasswd_file, echo, forwarded):
    f = front_with(
        f'[auth]\nbasic = "{htpasswd_file}"\nrealm = "{REALM}"\n'
        "[[route]]\n"
        'path = "/public"\n'
        f'url = "{echo.server_url}"\n'
        "[route.auth]\n"
        'basic = ""\n',
        forwarded=forwarded,
    )
    forged = {"X-Forwarded-User": "mallory"}
    # Authenticated: the app sees tlsfront's value only.
    r = get(f, uniq("forged-auth"), headers={**basic("alice", "secret"), **forged})
    assert header_values(seen(r), "X-Forwarded-User") == ["alice"], seen(r)
    # Public route: no user at all, and not the client's.
    r = get(f, "/public" + uniq("forged"), headers=forged)
    assert header_values(seen(r), "X-Forwarded-User") == [], seen(r)
    # Wrong password plus a forged user: refused, nothing reaches the app.
    path = uniq("forged-wrong")
    r = get(f, path, headers={**basic("alice", "nope"), **forged})
    assert r.status_code == 401
    assert count_of(echo, path) == 0


def test_client_x_forwarded_user_is_removed_without_any_auth(front_with, echo):
    f = front_with("")
    r = get(f, uniq("forged-noauth"), headers={"X-Forwarded-User": "mallory"})
    assert header_values(seen(r), "X-Forwarded-User") == [], seen(r)


def test_forward_authorization_true_passes_the_header(front_with, htpasswd_file):
    f = front_with(f'[auth]\nbasic = "{htpasswd_file}"\nforward_authorization = true\n')
    creds = basic("alice", "secret")
    r = get(f, uniq("b-fwd-authz"), headers=creds)
    headers = seen(r)
    assert header_values(headers, "Authorization") == [creds["Authorization"]], headers
    assert header_values(headers, "X-Forwarded-User") == ["alice"], headers


def test_htpasswd_change_is_picked_up_without_restart(basic_front, htpasswd_file, echo):
    path = uniq("b-reload")
    r = get(basic_front, path, headers=basic("carol", "pass3"))
    assert r.status_code == 401, "carol is not in the file yet"
    pid = basic_front.proc.pid
    run_htpasswd("-B", "-b", str(htpasswd_file), "carol", "pass3")
    assert "\ncarol:$2y$" in htpasswd_file.read_text()
    t0 = time.monotonic()
    status = None
    while time.monotonic() - t0 < 8:
        status = get(basic_front, path, headers=basic("carol", "pass3")).status_code
        if status == 200:
            break
        time.sleep(0.25)
    waited = time.monotonic() - t0
    assert status == 200, f"carol still gets {status} {waited:.1f}s after she was added to the htpasswd file"
    assert basic_front.proc.poll() is None and basic_front.proc.pid == pid
    r = get(basic_front, path, headers=basic("carol", "pass3"))
    assert header_values(seen(r), "X-Forwarded-User") == ["carol"]
    # The users already there still work.
    assert get(basic_front, path, headers=basic("alice", "secret")).status_code == 200


def test_route_basic_empty_is_public_while_top_level_requires_auth(front_with, htpasswd_file, echo):
    f = front_with(
        f'[auth]\nbasic = "{htpasswd_file}"\n'
        "[[route]]\n"
        'path = "/public"\n'
        f'url = "{echo.server_url}"\n'
        "[route.auth]\n"
        'basic = ""\n'
    )
    tag = uuid.uuid4().hex[:8]
    r = get(f, f"/public/{tag}")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert count_of(echo, f"/public/{tag}") == 1
    r = get(f, f"/private-{tag}")
    assert r.status_code == 401, (r.status_code, r.text[:300])
    assert r.headers.get("WWW-Authenticate", "").startswith('Basic realm="tlsfront"'), dict(r.headers)
    assert count_of(echo, f"/private-{tag}") == 0
    assert get(f, f"/private-{tag}", headers=basic("alice", "secret")).status_code == 200


# --------------------------------------------------------------------------- tlsfront check


def test_check_accepts_bcrypt_htpasswd(tmp_path, certdir, htpasswd_file):
    res = check(tmp_path, config_text(certdir, "http://127.0.0.1:9", f'[auth]\nbasic = "{htpasswd_file}"\n'))
    assert res.returncode == 0, res.out


@pytest.mark.parametrize(
    "flag,lineno",
    [("-m", 2), ("-s", 3), ("-p", 2), ("-d", 3)],
    ids=["apr1-md5", "sha1", "plain", "crypt"],
)
def test_check_rejects_weak_htpasswd_lines(tmp_path, certdir, flag, lineno):
    path = tmp_path / "weak.htpasswd"
    run_htpasswd("-B", "-b", "-c", str(path), "alice", "secret")
    if lineno == 3:
        with open(path, "a") as f:
            f.write(bcrypt_line("bob", "builder"))
    run_htpasswd(flag, "-b", str(path), "dave", "pw")
    lines = path.read_text().splitlines()
    assert lines[lineno - 1].startswith("dave:"), lines
    res = check(tmp_path, config_text(certdir, "http://127.0.0.1:9", f'[auth]\nbasic = "{path}"\n'))
    assert res.returncode != 0, f"check accepted a {flag} line:\n{res.out}"
    assert str(path) in res.out or path.name in res.out, res.out
    assert re.search(rf"line\s*{lineno}\b", res.out, re.I) or f"{path}:{lineno}" in res.out, (
        f"no line number {lineno} in:\n{res.out}"
    )
    assert "htpasswd -B" in res.out, res.out


def test_check_rejects_basic_and_forward_together(tmp_path, certdir, htpasswd_file):
    top = f'[auth]\nbasic = "{htpasswd_file}"\nforward = "http://127.0.0.1:9/verify"\n'
    res = check(tmp_path / "top", config_text(certdir, "http://127.0.0.1:9", top))
    assert res.returncode != 0, res.out
    assert "basic" in res.out and "forward" in res.out, res.out

    route = (
        "[[route]]\n"
        'path = "/x"\n'
        'url = "http://127.0.0.1:9"\n'
        "[route.auth]\n"
        f'basic = "{htpasswd_file}"\n'
        'forward = "http://127.0.0.1:9/verify"\n'
    )
    res = check(tmp_path / "route", config_text(certdir, "http://127.0.0.1:9", route))
    assert res.returncode != 0, res.out
    assert "basic" in res.out and "forward" in res.out, res.out

    # One in each table is fine: the route's replaces the top level's.
    split = (
        f'[auth]\nbasic = "{htpasswd_file}"\n'
        "[[route]]\n"
        'path = "/x"\n'
        'url = "http://127.0.0.1:9"\n'
        "[route.auth]\n"
        'forward = "http://127.0.0.1:9/verify"\n'
    )
    res = check(tmp_path / "split", config_text(certdir, "http://127.0.0.1:9", split))
    assert res.returncode == 0, res.out


# =========================================================================== forward


def forward_body(auth_url: str, extra: str = "") -> str:
    return f'[auth]\nforward = "{auth_url}"\n' + COPY + extra


def hdr(headers: list, name: str) -> str | None:
    values = header_values(headers, name)
    assert len(values) <= 1, (name, values)
    return values[0] if values else None


def test_forward_auth_good_session_reaches_the_app_with_copied_headers(front_with, auth, echo):
    f = front_with(forward_body(f"{auth.server_url}/verify"))
    path = uniq("fw-good")
    before = auth_last(auth)["count"]
    r = get(
        f,
        f"{path}?x=1&y=two",
        method="POST",
        data=b"payload-body",
        headers={"Cookie": "session=good", "Content-Type": "text/plain"},
    )
    app_headers = seen(r)
    assert r.json()["method"] == "POST" and r.json()["body"] == "payload-body", r.json()
    assert header_values(app_headers, "Remote-User") == ["alice"], app_headers
    assert header_values(app_headers, "Remote-Groups") == ["admins,dev"], app_headers
    assert header_values(app_headers, "Remote-Email") == ["alice@example.com"], app_headers
    assert count_of(echo, path) == 1

    state = auth_last(auth)
    assert state["count"] == before + 1, state
    last = state["last"]
    assert last["method"] == "GET", last
    assert last["path"] == "/verify", last
    assert last["body"] == "", f"the request body reached the auth service: {last}"
    h = last["headers"]
    assert hdr(h, "X-Forwarded-Method") == "POST", h
    assert hdr(h, "X-Forwarded-Proto") == "https", h
    assert hdr(h, "X-Forwarded-Uri") == f"{path}?x=1&y=two", h
    assert hdr(h, "X-Forwarded-For") == "127.0.0.1", h
    host = hdr(h, "X-Forwarded-Host")
    assert host in (f"localhost:{f.port}", "localhost"), h
    assert host == hdr(app_headers, "X-Forwarded-Host"), (h, app_headers)
    assert "session=good" in (hdr(h, "Cookie") or ""), h


def test_forward_auth_denial_goes_back_to_the_client_hardened(front_with, auth, echo):
    f = front_with(forward_body(f"{auth.server_url}/verify"))
    path = uniq("fw-login")
    before = counts(echo)["total"]
    r = get(f, f"{path}?a=1")
    assert r.status_code == 302, (r.status_code, r.text[:300])
    assert r.headers.get("Location") == f"https://login.example/?rd=%2F{path[1:]}%3Fa%3D1", dict(r.headers)
    assert r.text == "login required"
    cookie = r.headers.get("Set-Cookie", "")
    assert cookie.startswith("auth_flow=started"), dict(r.headers)
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert "secure" in attrs and "httponly" in attrs, f"Set-Cookie not hardened: {cookie!r}"
    assert count_of(echo, path) == 0
    assert counts(echo)["total"] == before, "a denied request reached the app"
    f.wait_refused("auth", 1)
    # The same with a session the auth service does not accept.
    path2 = uniq("fw-bad")
    r = get(f, path2, headers={"Cookie": "session=bad"})
    assert r.status_code == 302, (r.status_code, r.text[:300])
    assert count_of(echo, path2) == 0
    f.wait_refused("auth", 2)


@pytest.mark.parametrize("forwarded", TRUSTED.values(), ids=TRUSTED.keys())
def test_forward_auth_client_cannot_forge_copied_headers(front_with, auth, echo, forwarded):
    f = front_with(forward_body(f"{auth.server_url}/verify"), forwarded=forwarded)
    forged = {
        "Remote-User": "admin",
        "remote_user": "admin",
        "Remote_Groups": "root",
        "REMOTE-EMAIL": "admin@evil.example",
    }
    r = get(f, uniq("fw-forged"), headers={"Cookie": "session=good", **forged})
    h = seen(r)
    users = [(k, v) for k, v in h if k.lower().replace("_", "-") == "remote-user"]
    assert [v for _, v in users] == ["alice"], f"the app saw {users}"
    assert not [k for k, _ in h if "_" in k], f"underscore spellings reached the app: {h}"
    assert header_values(h, "Remote-Groups") == ["admins,dev"], h
    assert header_values(h, "Remote-Email") == ["alice@example.com"], h

    # Forged headers with a bad session: nothing reaches the app.
    path = uniq("fw-forged-bad")
    r = get(f, path, headers={"Cookie": "session=bad", **forged})
    assert r.status_code == 302, (r.status_code, r.text[:300])
    assert count_of(echo, path) == 0


def test_forward_auth_unreachable_is_502(front_with, apps, echo):
    own = start_auth_tcp(apps, name="auth-app-stopped")
    f = front_with(forward_body(f"{own.server_url}/verify"))
    ok = uniq("fw-up")
    assert get(f, ok, headers={"Cookie": "session=good"}).status_code == 200
    own.stop()
    host, port = own.target.rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()
    path = uniq("fw-down")
    before = counts(echo)["total"]
    r = get(f, path, headers={"Cookie": "session=good"})
    assert r.status_code == 502, (r.status_code, r.text[:300])
    assert count_of(echo, path) == 0
    assert counts(echo)["total"] == before


def test_forward_auth_slower_than_forward_timeout_is_504(front_with, auth, echo):
    f = front_with(forward_body(f"{auth.server_url}/slow", 'forward_timeout = "1s"\n'))
    path = uniq("fw-slow")
    t0 = time.monotonic()
    r = get(f, path, headers={"Cookie": "session=good"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, (r.status_code, r.text[:300], f"{elapsed:.2f}s")
    assert 0.9 <= elapsed < 3.5, f"504 after {elapsed:.2f}s (forward_timeout 1s, the service answers after 4s)"
    # Once the slow service has answered (200, 4 s after the request), still nothing reached the app.
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
    assert count_of(echo, path) == 0


def test_forward_auth_over_a_unix_socket(front_with, apps, echo, sockdir):
    sock = sockdir / "auth.sock"
    unix_auth = start_auth_unix(apps, sock)
    f = front_with(forward_body(f"unix:{sock}", 'forward_path = "/verify"\n'))
    path = uniq("fw-unix")
    r = get(f, f"{path}?q=1", headers={"Cookie": "session=good"})
    h = seen(r)
    assert header_values(h, "Remote-User") == ["alice"], h
    last = auth_last(unix_auth)["last"]
    assert last["path"] == "/verify", last
    assert hdr(last["headers"], "X-Forwarded-Uri") == f"{path}?q=1", last
    assert hdr(last["headers"], "X-Forwarded-Method") == "GET", last

    denied = uniq("fw-unix-denied")
    r = get(f, denied)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    assert r.headers.get("Location", "").startswith("https://login.example/?rd="), dict(r.headers)
    assert count_of(echo, denied) == 0
    assert count_of(echo, path) == 1
