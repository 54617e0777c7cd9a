"""`tlsfront doctor` against real sample apps, broken and fixed.

The sample apps live in tests/apps/ and switch their proxy-related behaviour
with environment variables:

    flask_app.py   PROXY_FIX, COOKIE_SECURE, SAMESITE, TRUSTED_HOSTS, CHURN
    django_app/    FIXED (Django's proxy and cookie settings), PUBLIC_PORT
    express_app/   TRUST_PROXY, COOKIE_SECURE (0|1|auto), ALLOWED_HOSTS
    quirks_app.py  no settings: one quirk per route (big and many cookies,
                   a slow or HTTP/1.0 answer, a Location with a space, ...)

Each variant runs once per session on a free 127.0.0.1 port. The doctor is
run as a subprocess (30 s limit) exactly as a user would:

    tlsfront doctor --upstream http://127.0.0.1:PORT \\
        --public-url https://localhost:8443 --path / --path ... --json

A note on "clean" and `trusts_spoofed_forwarded`: the doctor talks to the app
directly, from loopback, so an app that believes X-Forwarded-* (which it must,
to build https:// URLs behind tlsfront) also believes the doctor's forged
ones, and the finding is *info* on a loopback upstream (an error when the
app is reachable from elsewhere). Info does not make a report unclean, so
`assert_clean` cannot tell a hardened app from a trusting one: a test that
says an app no longer believes forged headers also checks
`assert_absent(run, "trusts_spoofed_forwarded")`. The finding goes away only
when the app also refuses hosts it does not serve: Flask's TRUSTED_HOSTS,
Django's ALLOWED_HOSTS, an allow-list middleware in Express (a forged
X-Forwarded-Host then gets 400, and nothing forged is reflected).

The Express app needs its node_modules: run `npm ci --prefix tests/apps/express_app`
before pytest (scripts/test.sh does). Without them the Express tests fail
(they are not skipped).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import ANSI_RE, REPO_ROOT, _LOGS, free_port, read_log, stop_process, tlsfront_bin

APPS_DIR = REPO_ROOT / "tests" / "apps"
FLASK_APP = APPS_DIR / "flask_app.py"
QUIRKS_APP = APPS_DIR / "quirks_app.py"
DJANGO_DIR = APPS_DIR / "django_app"
EXPRESS_DIR = APPS_DIR / "express_app"
NPM_CI = "npm ci --prefix tests/apps/express_app"

PUBLIC_URL = "https://localhost:8443"
PUBLIC_HOST = "localhost"
DOCTOR_TIMEOUT = 30.0
APP_START_TIMEOUT = 20.0
HTTP_TIMEOUT = 5.0

# The request tlsfront would send for https://localhost:8443 (as the doctor does).
HONEST_HEADERS = {
    "Host": "localhost:8443",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "localhost:8443",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-For": "198.51.100.23",
}

SEVERITIES = ("error", "warning", "info")

# Severity of `trusts_spoofed_forwarded` when the upstream is loopback (all
# sample apps run on 127.0.0.1), per the doctor contract (docs/doctor.md, `tlsfront
# doctor`): "information when the app is on loopback, an error when anyone
# else can reach it". Being info, it leaves a trusting app clean; the finding
# is absent only when the app also refuses hosts it does not serve
# (FLASK_FIXED has TRUSTED_HOSTS, Django has ALLOWED_HOSTS, EXPRESS_HARDENED an
# allow-list), which the tests check with assert_absent. Were the contract
# changed (say, to "warning on loopback"), change this one line and the tests
# follow.
SPOOF_SEVERITY_ON_LOOPBACK = "info"
FRAMEWORKS = ("flask", "django", "express", "rails")

# --------------------------------------------------------------------------- variants

FLASK_BROKEN = {"PROXY_FIX": "0", "COOKIE_SECURE": "0", "SAMESITE": "", "TRUSTED_HOSTS": "", "CHURN": "0"}
FLASK_PROXYFIX_ONLY = {**FLASK_BROKEN, "PROXY_FIX": "1"}
FLASK_FIXED_TRUSTING = {**FLASK_BROKEN, "PROXY_FIX": "1", "COOKIE_SECURE": "1", "SAMESITE": "Lax"}
FLASK_FIXED = {**FLASK_FIXED_TRUSTING, "TRUSTED_HOSTS": PUBLIC_HOST}
FLASK_CHURN = {**FLASK_FIXED, "CHURN": "1"}
FLASK_PATHS = ("/", "/login", "/whoami")

DJANGO_BROKEN = {"FIXED": "0", "PUBLIC_PORT": "8443"}
DJANGO_FIXED = {**DJANGO_BROKEN, "FIXED": "1"}
DJANGO_PATHS = ("/", "/login/", "/go/")

EXPRESS_BROKEN = {"TRUST_PROXY": "0", "COOKIE_SECURE": "1", "ALLOWED_HOSTS": ""}
EXPRESS_FIXED = {**EXPRESS_BROKEN, "TRUST_PROXY": "1"}
EXPRESS_HARDENED = {**EXPRESS_FIXED, "ALLOWED_HOSTS": PUBLIC_HOST}
EXPRESS_PATHS = ("/", "/login")

# What each framework's fix text may name, and the sample app's env that does it.
FIX_SETTINGS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "flask": [
        ("ProxyFix", {"PROXY_FIX": "1"}),
        ("SESSION_COOKIE_SECURE", {"COOKIE_SECURE": "1"}),
        ("REMEMBER_COOKIE_SECURE", {"COOKIE_SECURE": "1"}),
        ("SESSION_COOKIE_SAMESITE", {"SAMESITE": "Lax"}),
        ("TRUSTED_HOSTS", {"TRUSTED_HOSTS": PUBLIC_HOST}),
    ],
    "django": [
        # FIXED=1 is exactly these settings (see tests/apps/django_app/doctor_site/settings.py).
        ("SECURE_PROXY_SSL_HEADER", {"FIXED": "1"}),
        ("USE_X_FORWARDED_HOST", {"FIXED": "1"}),
        ("USE_X_FORWARDED_PORT", {"FIXED": "1"}),
        ("SESSION_COOKIE_SECURE", {"FIXED": "1"}),
        ("CSRF_COOKIE_SECURE", {"FIXED": "1"}),
        ("CSRF_TRUSTED_ORIGINS", {"FIXED": "1"}),
    ],
    "express": [
        ("trust proxy", {"TRUST_PROXY": "1"}),
        ("secure: true", {"COOKIE_SECURE": "1"}),
        ("allowed_hosts", {"ALLOWED_HOSTS": PUBLIC_HOST}),
        ("allowed hosts", {"ALLOWED_HOSTS": PUBLIC_HOST}),
    ],
}

# --------------------------------------------------------------------------- sample apps


@dataclass
class SampleApp:
    framework: str
    env: dict[str, str]
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def upstream(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        settings = " ".join(f"{k}={v}" for k, v in sorted(self.env.items()))
        return f"{self.framework} sample app ({settings or 'defaults'}) at {self.upstream}"


def _require_express_modules() -> None:
    if shutil.which("node") is None:
        pytest.fail("`node` is not on PATH: the Express sample app needs Node.js (>= 18)", pytrace=False)
    missing = [m for m in ("express", "express-session") if not (EXPRESS_DIR / "node_modules" / m / "package.json").is_file()]
    if missing:
        pytest.fail(
            f"{EXPRESS_DIR / 'node_modules'} lacks {missing}: run `{NPM_CI}` (from the repo root) before pytest",
            pytrace=False,
        )


class SampleApps:
    """Starts sample app variants on demand, one process per distinct variant."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[tuple, SampleApp] = {}

    def get(self, framework: str, env: dict[str, str]) -> SampleApp:
        key = (framework, tuple(sorted(env.items())))
        app = self.running.get(key)
        if app is not None and app.proc.poll() is None:
            return app
        app = self._start(framework, env)
        self.running[key] = app
        return app

    def _start(self, framework: str, variant: dict[str, str]) -> SampleApp:
        port = free_port()
        name = f"{framework}-{len(self.running)}-{port}"
        log = self.workdir / f"{name}.log"
        _LOGS[f"sample app {name} ({' '.join(f'{k}={v}' for k, v in sorted(variant.items()))})"] = log
        env = dict(os.environ, PORT=str(port), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env.update(variant)
        if framework == "flask":
            cmd = [sys.executable, str(FLASK_APP)]
            cwd = self.workdir
            health = "/healthz"
        elif framework == "django":
            env["DJANGO_SETTINGS_MODULE"] = "doctor_site.settings"
            cmd = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
            cwd = DJANGO_DIR
            health = "/healthz/"
        elif framework == "quirks":
            cmd = [sys.executable, str(QUIRKS_APP)]
            cwd = self.workdir
            health = "/healthz"
        elif framework == "express":
            _require_express_modules()
            cmd = ["node", "server.js"]
            cwd = EXPRESS_DIR
            health = "/healthz"
        else:
            raise ValueError(framework)
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                cmd, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT
            )
        app = SampleApp(framework=framework, env=dict(variant), port=port, proc=proc, log=log)
        deadline = time.monotonic() + APP_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"{app.describe()} exited early with code {proc.returncode}:\n{read_log(log)}", pytrace=False
                )
            try:
                # Host: the public host, which every variant serves (allow-lists included).
                r = requests.get(
                    f"{app.upstream}{health}", headers={"Host": "localhost"}, timeout=1, allow_redirects=False
                )
                if r.status_code == 200 and r.text.strip() == "ok":
                    return app
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                stop_process(proc)
                pytest.fail(
                    f"{app.describe()} did not answer {health} within {APP_START_TIMEOUT}s:\n{read_log(log)}",
                    pytrace=False,
                )
            time.sleep(0.1)

    def stop_all(self) -> None:
        for app in self.running.values():
            stop_process(app.proc)
        self.running.clear()


@pytest.fixture(scope="session")
def sample_apps(tmp_path_factory) -> SampleApps:
    apps = SampleApps(tmp_path_factory.mktemp("sample-apps"))
    try:
        yield apps
    finally:
        apps.stop_all()


# --------------------------------------------------------------------------- running the doctor


@dataclass
class DoctorRun:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    report: dict | None

    def context(self) -> str:
        return (
            f"cmd: {' '.join(self.cmd)}\nexit status: {self.returncode}\n"
            f"stdout:\n{self.stdout[-6000:]}\nstderr:\n{self.stderr[-3000:]}"
        )


@pytest.fixture(scope="session")
def doctor_workdir(tmp_path_factory) -> Path:
    binary = tlsfront_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"tlsfront binary not found at {binary} (build it with `cargo build`, or set TLSFRONT_BIN)",
            pytrace=False,
        )
    work = tmp_path_factory.mktemp("doctor")
    (work / "empty.toml").write_text("")  # an empty file is a valid config: built-in defaults
    return work


def run_doctor(
    workdir: Path,
    upstream: str | None,
    paths: tuple[str, ...] | list[str] = (),
    *,
    as_json: bool = True,
    public_url: str | None = PUBLIC_URL,
    extra: list[str] | None = None,
    env_extra: dict[str, str] | None = None,
    drop_env: tuple[str, ...] = (),
) -> DoctorRun:
    cmd = [str(tlsfront_bin()), "doctor"]
    if upstream is not None:
        cmd += ["--upstream", upstream]
    if public_url is not None:
        cmd += ["--public-url", public_url]
    for p in paths:
        cmd += ["--path", p]
    cmd += extra or []
    if as_json:
        cmd.append("--json")
    env = dict(os.environ, TLSFRONT_CONFIG=str(workdir / "empty.toml"), NO_COLOR="1")
    env.update(env_extra or {})
    for name in drop_env:
        env.pop(name, None)
    try:
        res = subprocess.run(
            cmd,
            cwd=str(workdir),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DOCTOR_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {DOCTOR_TIMEOUT}s\nstdout so far:\n{exc.stdout}")
    run = DoctorRun(cmd=cmd, returncode=res.returncode, stdout=res.stdout, stderr=res.stderr, report=None)
    if res.returncode == 2 and "unrecognized subcommand" in res.stderr:
        pytest.fail(f"this tlsfront binary has no `doctor` subcommand (rebuild it?)\n{run.context()}", pytrace=False)
    if as_json and res.returncode in (0, 1):
        try:
            run.report = json.loads(res.stdout)
        except json.JSONDecodeError as exc:
            pytest.fail(f"--json output is not one JSON object ({exc})\n{run.context()}", pytrace=False)
        check_report_shape(run)
    return run


def doctor_app(workdir: Path, app: SampleApp, paths, **kwargs) -> DoctorRun:
    return run_doctor(workdir, app.upstream, paths, **kwargs)


# --------------------------------------------------------------------------- assertions


def check_report_shape(run: DoctorRun) -> None:
    """The JSON contract: keys, types, summary and clean consistent with findings."""
    r = run.report
    ctx = run.context()
    assert isinstance(r, dict), ctx
    for key, typ in (("upstream", str), ("public_url", str), ("findings", list), ("summary", dict), ("clean", bool)):
        assert isinstance(r.get(key), typ), f"JSON key {key!r} missing or not {typ.__name__}\n{ctx}"
    assert "framework" in r and (r["framework"] is None or r["framework"] in FRAMEWORKS), ctx
    for f in r["findings"]:
        for key in ("code", "severity", "title", "why", "evidence"):
            assert isinstance(f.get(key), str), f"finding key {key!r} missing or not a string: {f}\n{ctx}"
        assert f["code"] and f["title"], f"finding without code or title: {f}"
        assert f["severity"] in SEVERITIES, f
        assert isinstance(f.get("tlsfront_fixes"), bool), f
        assert isinstance(f.get("fix"), dict), f
        assert set(f["fix"]) <= set(FRAMEWORKS), f"unknown framework in fix: {sorted(f['fix'])}"
        assert all(isinstance(v, str) for v in f["fix"].values()), f
    counts = {s: sum(1 for f in r["findings"] if f["severity"] == s) for s in SEVERITIES}
    assert r["summary"] == {"errors": counts["error"], "warnings": counts["warning"], "infos": counts["info"]}, (
        f"summary disagrees with the findings: {r['summary']} vs {counts}\n{ctx}"
    )
    assert r["clean"] == (counts["error"] == 0 and counts["warning"] == 0), f"clean is wrong\n{ctx}"
    expected_rc = 1 if counts["error"] else 0
    assert run.returncode == expected_rc, f"exit status {run.returncode}, expected {expected_rc}\n{ctx}"


def codes(run: DoctorRun) -> list[str]:
    return [f["code"] for f in run.report["findings"]]


def summary(run: DoctorRun) -> str:
    lines = [f"  {f['severity']:7} {f['code']}: {f['evidence']}" for f in run.report["findings"]]
    return f"doctor found:\n" + ("\n".join(lines) or "  nothing") + f"\n(exit {run.returncode})"


def get_finding(run: DoctorRun, code: str) -> dict:
    for f in run.report["findings"]:
        if f["code"] == code:
            return f
    pytest.fail(f"expected finding {code!r}, not reported\n{summary(run)}", pytrace=False)


def assert_absent(run: DoctorRun, *absent: str) -> None:
    found = [c for c in codes(run) if c in absent]
    assert not found, f"unexpected findings {found}\n{summary(run)}"


def serious(run: DoctorRun) -> list[dict]:
    return [f for f in run.report["findings"] if f["severity"] in ("error", "warning")]


def assert_clean(run: DoctorRun) -> None:
    assert not serious(run), f"expected no error or warning findings\n{summary(run)}"
    assert run.report["clean"] is True, summary(run)
    assert run.returncode == 0, summary(run)


# --------------------------------------------------------------------------- the sample apps themselves
# These check the apps without the doctor, so a failing doctor test can be
# told apart from a sample app that does not misbehave as documented.


def _get(app: SampleApp, path: str, headers: dict | None = None, cookies: str | None = None) -> requests.Response:
    h = dict(HONEST_HEADERS if headers is None else headers)
    if cookies:
        h["Cookie"] = cookies
    return requests.get(f"{app.upstream}{path}", headers=h, allow_redirects=False, timeout=HTTP_TIMEOUT)


def _set_cookies(r: requests.Response) -> list[str]:
    return list(r.raw.headers.getlist("Set-Cookie"))


def test_flask_sample_app_behaves_as_documented(sample_apps):
    broken = sample_apps.get("flask", FLASK_BROKEN)
    r = _get(broken, "/")
    assert r.status_code == 302 and "next=http://localhost:8443/" in r.headers["Location"], r.headers
    r = _get(broken, "/login")
    assert 'action="http://localhost:8443/login"' in r.text, r.text
    (cookie,) = _set_cookies(r)
    assert cookie.startswith("session=") and "Secure" not in cookie, cookie

    fixed = sample_apps.get("flask", FLASK_FIXED)
    r = _get(fixed, "/")
    assert "next=https://localhost:8443/" in r.headers["Location"], r.headers
    r = _get(fixed, "/login")
    assert 'action="https://localhost:8443/login"' in r.text, r.text
    (cookie,) = _set_cookies(r)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
    # The same client again: no new session cookie.
    assert _set_cookies(_get(fixed, "/login", cookies=cookie.split(";")[0])) == []
    who = _get(fixed, "/whoami").json()
    assert who["external_index"] == "https://localhost:8443/" and who["remote_addr"] == "198.51.100.23", who
    # A forged X-Forwarded-Host is refused (TRUSTED_HOSTS).
    forged = {**HONEST_HEADERS, "X-Forwarded-Host": "spoofed.invalid"}
    assert _get(fixed, "/whoami", headers=forged).status_code == 400

    churn = sample_apps.get("flask", FLASK_CHURN)
    first = [c for c in _set_cookies(_get(churn, "/whoami")) if c.startswith("app_session=")]
    again = [c for c in _set_cookies(_get(churn, "/whoami", cookies=first[0].split(";")[0])) if c.startswith("app_session=")]
    assert first and again and first[0].split(";")[0] != again[0].split(";")[0], (first, again)


def test_django_sample_app_behaves_as_documented(sample_apps):
    broken = sample_apps.get("django", DJANGO_BROKEN)
    r = _get(broken, "/")
    assert "http://localhost:8443/dashboard/" in r.text, r.text
    assert any(c.startswith("sessionid=") and "Secure" not in c for c in _set_cookies(r)), _set_cookies(r)
    r = _get(broken, "/go/")
    assert r.headers["Location"] == "http://localhost:8443/dashboard/", r.headers
    r = _get(broken, "/login/")
    assert any(c.startswith("csrftoken=") and "Secure" not in c for c in _set_cookies(r)), _set_cookies(r)

    fixed = sample_apps.get("django", DJANGO_FIXED)
    r = _get(fixed, "/")
    assert "https://localhost:8443/dashboard/" in r.text, r.text
    assert any(c.startswith("sessionid=") and "Secure" in c and "HttpOnly" in c for c in _set_cookies(r))
    r = _get(fixed, "/go/")
    assert r.headers["Location"] == "https://localhost:8443/dashboard/", r.headers
    r = _get(fixed, "/login/")
    assert any(c.startswith("csrftoken=") and "Secure" in c for c in _set_cookies(r)), _set_cookies(r)
    forged = {**HONEST_HEADERS, "X-Forwarded-Host": "spoofed.invalid"}
    assert _get(fixed, "/", headers=forged).status_code == 400


def test_express_sample_app_behaves_as_documented(sample_apps):
    broken = sample_apps.get("express", EXPRESS_BROKEN)
    r = _get(broken, "/")
    assert r.status_code == 302 and r.headers["Location"] == "http://localhost:8443/login", r.headers
    # cookie.secure without trust proxy: express-session never sends the cookie.
    assert _set_cookies(_get(broken, "/login")) == []

    fixed = sample_apps.get("express", EXPRESS_FIXED)
    r = _get(fixed, "/")
    assert r.headers["Location"] == "https://localhost:8443/login", r.headers
    r = _get(fixed, "/login")
    (cookie,) = _set_cookies(r)
    assert cookie.startswith("connect.sid=") and "Secure" in cookie and "HttpOnly" in cookie, cookie
    assert "SameSite=Lax" in cookie, cookie
    assert _set_cookies(_get(fixed, "/login", cookies=cookie.split(";")[0])) == []

    hardened = sample_apps.get("express", EXPRESS_HARDENED)
    forged = {**HONEST_HEADERS, "X-Forwarded-Host": "spoofed.invalid"}
    assert _get(hardened, "/whoami", headers=forged).status_code == 400
    assert _get(hardened, "/whoami").json()["ip"] == "198.51.100.23"


# --------------------------------------------------------------------------- Flask


def test_flask_broken_redirects_and_cookies(sample_apps, doctor_workdir):
    app = sample_apps.get("flask", FLASK_BROKEN)
    run = doctor_app(doctor_workdir, app, FLASK_PATHS)
    assert run.returncode == 1, summary(run)
    assert run.report["upstream"].rstrip("/") == app.upstream
    assert run.report["public_url"].rstrip("/") == PUBLIC_URL
    redirect = get_finding(run, "redirect_http_scheme")
    assert redirect["severity"] == "error", redirect
    assert "ProxyFix" in redirect["fix"].get("flask", ""), redirect["fix"]
    secure = get_finding(run, "cookie_missing_secure")
    assert secure["severity"] == "warning" and secure["tlsfront_fixes"] is True, secure
    for f in run.report["findings"]:
        assert f["fix"].get("flask", "").strip(), f"finding {f['code']} has no fix.flask: {f['fix']}"
    # The app ignores X-Forwarded-*, so the forged ones change nothing, and
    # its URLs carry the public host (the Host header), not 127.0.0.1:PORT.
    assert_absent(run, "trusts_spoofed_forwarded", "redirect_internal_host", "session_churn")


def test_flask_proxyfix_without_secure_cookie(sample_apps, doctor_workdir):
    app = sample_apps.get("flask", FLASK_PROXYFIX_ONLY)
    run = doctor_app(doctor_workdir, app, FLASK_PATHS)
    assert run.returncode == 0, summary(run)
    assert_absent(run, "redirect_http_scheme", "redirect_internal_host")
    secure = get_finding(run, "cookie_missing_secure")
    assert secure["severity"] == "warning", secure
    assert secure["tlsfront_fixes"] is True, secure
    assert "SESSION_COOKIE_SECURE" in secure["fix"].get("flask", ""), secure["fix"]


def test_flask_fully_fixed_is_clean(sample_apps, doctor_workdir):
    """ProxyFix + Secure + SameSite + TRUSTED_HOSTS: nothing serious, and the
    forged headers are refused (the spoofing finding, info on loopback and so
    invisible to assert_clean, is absent).

    Werkzeug's 400 page for the refused request reads "Host 'spoofed.invalid'
    is not trusted": a doctor that counts that echo of a refused host as
    believing it reports the finding, and this test fails (as it did when the
    assert_absent was added, against the doctor as of 1e4935b)."""
    app = sample_apps.get("flask", FLASK_FIXED)
    run = doctor_app(doctor_workdir, app, FLASK_PATHS)
    assert_clean(run)
    assert_absent(run, "trusts_spoofed_forwarded")


def test_flask_fixed_but_trusting_anyone_only_warns(sample_apps, doctor_workdir):
    """ProxyFix + Secure + SameSite, without TRUSTED_HOSTS: works behind
    tlsfront (exit 0), but forged headers from a direct client are believed:
    reported, as info on loopback (so the report is still clean), never as a
    warning or error."""
    app = sample_apps.get("flask", FLASK_FIXED_TRUSTING)
    run = doctor_app(doctor_workdir, app, FLASK_PATHS)
    assert run.returncode == 0, summary(run)
    assert get_finding(run, "trusts_spoofed_forwarded")["severity"] == SPOOF_SEVERITY_ON_LOOPBACK, summary(run)
    others = [f["code"] for f in serious(run) if f["code"] != "trusts_spoofed_forwarded"]
    assert not others, summary(run)
    assert run.report["clean"] is (SPOOF_SEVERITY_ON_LOOPBACK == "info"), summary(run)


def test_flask_session_churn(sample_apps, doctor_workdir):
    app = sample_apps.get("flask", FLASK_CHURN)
    run = doctor_app(doctor_workdir, app, FLASK_PATHS)
    churn = get_finding(run, "session_churn")
    assert churn["severity"] == "warning", churn
    assert churn["fix"].get("flask", "").strip(), churn
    assert run.returncode == 0, summary(run)


@pytest.mark.parametrize("proxy_fix", ["1", "0"], ids=["with-proxyfix", "without-proxyfix"])
def test_flask_trusts_spoofed_forwarded(sample_apps, doctor_workdir, proxy_fix):
    app = sample_apps.get("flask", {**FLASK_BROKEN, "PROXY_FIX": proxy_fix})
    run = doctor_app(doctor_workdir, app, FLASK_PATHS)
    if proxy_fix == "1":
        spoof = get_finding(run, "trusts_spoofed_forwarded")
        # ProxyFix believes whatever arrives; the app is on 127.0.0.1: info, not an error.
        assert spoof["severity"] == SPOOF_SEVERITY_ON_LOOPBACK, spoof
    else:
        assert_absent(run, "trusts_spoofed_forwarded")


# --------------------------------------------------------------------------- Django


def test_django_broken(sample_apps, doctor_workdir):
    app = sample_apps.get("django", DJANGO_BROKEN)
    run = doctor_app(doctor_workdir, app, DJANGO_PATHS)
    assert run.returncode == 1, summary(run)
    redirect = get_finding(run, "redirect_http_scheme")
    assert "SECURE_PROXY_SSL_HEADER" in redirect["fix"].get("django", ""), redirect["fix"]
    secure = get_finding(run, "cookie_missing_secure")
    assert secure["fix"].get("django", "").strip(), secure["fix"]
    # sessionid is HttpOnly; csrftoken is meant to be script-readable.
    assert_absent(run, "cookie_missing_httponly", "trusts_spoofed_forwarded", "session_churn")


def test_django_fixed_is_clean(sample_apps, doctor_workdir):
    app = sample_apps.get("django", DJANGO_FIXED)
    run = doctor_app(doctor_workdir, app, DJANGO_PATHS)
    assert_clean(run)
    assert_absent(run, "cookie_missing_httponly")  # csrftoken without HttpOnly is fine
    assert_absent(run, "trusts_spoofed_forwarded")  # ALLOWED_HOSTS refuses the forged host


# --------------------------------------------------------------------------- Express


def test_express_broken(sample_apps, doctor_workdir):
    app = sample_apps.get("express", EXPRESS_BROKEN)
    run = doctor_app(doctor_workdir, app, EXPRESS_PATHS)
    assert run.returncode == 1, summary(run)
    redirect = get_finding(run, "redirect_http_scheme")
    assert "trust proxy" in redirect["fix"].get("express", "").lower(), redirect["fix"]


def test_express_fixed_is_clean(sample_apps, doctor_workdir):
    app = sample_apps.get("express", EXPRESS_FIXED)
    run = doctor_app(doctor_workdir, app, EXPRESS_PATHS)
    assert_clean(run)


def test_express_trust_proxy_reflects_forged_client_ip(sample_apps, doctor_workdir):
    """/whoami shows req.ip: with trust proxy, a forged X-Forwarded-For shows
    up there (reported, info on loopback); with a host allow-list the forged
    request is refused, so the finding is gone, not merely not serious."""
    trusting = doctor_app(doctor_workdir, sample_apps.get("express", EXPRESS_FIXED), (*EXPRESS_PATHS, "/whoami"))
    spoof = get_finding(trusting, "trusts_spoofed_forwarded")
    assert spoof["severity"] == SPOOF_SEVERITY_ON_LOOPBACK, spoof
    hardened = doctor_app(doctor_workdir, sample_apps.get("express", EXPRESS_HARDENED), (*EXPRESS_PATHS, "/whoami"))
    assert_clean(hardened)
    assert_absent(hardened, "trusts_spoofed_forwarded")


# --------------------------------------------------------------------------- following the printed fix


FOLLOW_CASES = {
    "flask": (FLASK_BROKEN, FLASK_PATHS),
    "django": (DJANGO_BROKEN, DJANGO_PATHS),
    "express": (EXPRESS_BROKEN, EXPRESS_PATHS),
}


@pytest.mark.parametrize("framework", list(FOLLOW_CASES))
def test_following_the_printed_fix_makes_it_clean(sample_apps, doctor_workdir, framework):
    """Start broken; apply exactly the settings the findings' fix texts name
    (error and warning findings must name one; info ones are applied when
    they do); repeat until clean."""
    env, paths = FOLLOW_CASES[framework]
    env = dict(env)
    history: list[str] = []
    for _round in range(4):
        app = sample_apps.get(framework, env)
        run = doctor_app(doctor_workdir, app, paths)
        history.append(f"{app.describe()}:\n{summary(run)}")
        if not serious(run):
            assert _round > 0, "the broken variant is already clean\n\n" + history[0]
            assert run.report["clean"] is True and run.returncode == 0, "\n\n".join(history)
            return
        changes: dict[str, str] = {}
        for f in run.report["findings"]:
            text = f["fix"].get(framework, "")
            named = {}
            for keyword, settings in FIX_SETTINGS[framework]:
                if keyword.lower() in text.lower():
                    named.update(settings)
            if not named and f["severity"] != "info":
                pytest.fail(
                    f"{f['code']} ({f['severity']}): fix.{framework} names no setting the sample app knows "
                    f"(looked for {[k for k, _ in FIX_SETTINGS[framework]]}): {text!r}\n\n" + "\n\n".join(history),
                    pytrace=False,
                )
            changes.update(named)
        new_env = {**env, **changes}
        if new_env == env:
            pytest.fail(
                f"applied every setting the fixes name ({changes}), still not clean\n\n" + "\n\n".join(history),
                pytrace=False,
            )
        env = new_env
    pytest.fail("not clean after 4 rounds of following the fixes\n\n" + "\n\n".join(history), pytrace=False)


def test_first_run_of_each_broken_app_is_not_clean(sample_apps, doctor_workdir):
    """Guards the previous test against a doctor that reports nothing."""
    for framework, (env, paths) in FOLLOW_CASES.items():
        run = doctor_app(doctor_workdir, sample_apps.get(framework, env), paths)
        assert run.returncode == 1 and "redirect_http_scheme" in codes(run), f"{framework}: {summary(run)}"


@pytest.mark.parametrize(
    "framework,env,paths",
    [
        ("flask", FLASK_BROKEN, FLASK_PATHS),
        ("django", DJANGO_BROKEN, DJANGO_PATHS),
        ("express", EXPRESS_FIXED, EXPRESS_PATHS),
    ],
    ids=["flask", "django", "express"],
)
def test_framework_is_recognised(sample_apps, doctor_workdir, framework, env, paths):
    run = doctor_app(doctor_workdir, sample_apps.get(framework, env), paths)
    assert run.report["framework"] == framework, summary(run)


# --------------------------------------------------------------------------- the upstream itself


def test_unreachable_upstream(doctor_workdir):
    port = free_port()  # nothing listens there
    run = run_doctor(doctor_workdir, f"http://127.0.0.1:{port}", ["/"])
    assert run.returncode == 1, run.context()
    f = get_finding(run, "upstream_unreachable")
    assert f["severity"] == "error", f


def test_defaults_from_config_file(sample_apps, doctor_workdir, tmp_path):
    """-c FILE: upstream.url from the file, --public-url defaults to
    https://localhost:<listen.https port>, --path defaults to /."""
    app = sample_apps.get("django", DJANGO_BROKEN)
    config = tmp_path / "tlsfront.toml"
    config.write_text(f'[listen]\nhttps = "127.0.0.1:9443"\n\n[upstream]\nurl = "{app.upstream}"\n')
    run = run_doctor(doctor_workdir, None, [], public_url=None, extra=["-c", str(config)])
    assert run.report["public_url"].rstrip("/") == "https://localhost:9443", run.context()
    assert run.report["upstream"].rstrip("/") == app.upstream, run.context()
    # GET / of the broken Django app: an http:// URL in the page, a cookie without Secure.
    redirect = get_finding(run, "redirect_http_scheme")
    assert "http://localhost:9443" in redirect["evidence"], redirect
    get_finding(run, "cookie_missing_secure")
    assert run.returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--upstream", "http://127.0.0.1:1", "--public-url", "not a url"],
        ["--upstream", "http://127.0.0.1:1", "--no-such-flag"],
    ],
    ids=["bad-public-url", "unknown-flag"],
)
def test_usage_errors_exit_2(doctor_workdir, args):
    run = run_doctor(doctor_workdir, None, [], public_url=None, extra=args, as_json=True)
    assert run.returncode == 2, run.context()


# --------------------------------------------------------------------------- human output


@pytest.mark.parametrize("variant", ["broken", "fixed"])
def test_human_output(sample_apps, doctor_workdir, variant):
    app = sample_apps.get("flask", FLASK_BROKEN if variant == "broken" else FLASK_FIXED)
    as_json = doctor_app(doctor_workdir, app, FLASK_PATHS)
    # No NO_COLOR, a colour-capable TERM: only the missing TTY keeps it plain.
    human = doctor_app(
        doctor_workdir,
        app,
        FLASK_PATHS,
        as_json=False,
        env_extra={"TERM": "xterm-256color"},
        drop_env=("NO_COLOR",),
    )
    assert human.returncode == as_json.returncode, f"human mode exit differs from --json\n{human.context()}"
    assert not ANSI_RE.search(human.stdout + human.stderr), f"ANSI escapes without a TTY\n{human.context()}"
    out = human.stdout
    assert out.strip(), human.context()
    for f in as_json.report["findings"]:
        assert f["title"] in out, f"title {f['title']!r} missing from the human report\n{human.context()}"
    if variant == "broken":
        assert "Fix" in out, human.context()
        assert "ProxyFix" in out, human.context()


# --------------------------------------------------------------------------- login forms (POST)
# For each checked page with a login form, the doctor posts the form once as a
# browser at the public URL would (Origin/Referer of the public URL, the page's
# hidden fields and cookies, a user name and password that cannot log in).


def _posts_in_log(app: SampleApp, target: str) -> list[str]:
    """Django's runserver logs each request: `"POST /login/ HTTP/1.1" 401 …`."""
    return [line for line in read_log(app.log, limit=1 << 20).splitlines() if f'"POST {target} HTTP/1.1"' in line]


def test_django_login_form_refused_by_csrf_origin_check(sample_apps, doctor_workdir):
    """Django's defaults: GETs look fine, but the login POST from the public
    https origin fails with "CSRF verification failed" (Origin checking failed)."""
    app = sample_apps.get("django", DJANGO_BROKEN)
    before = len(_posts_in_log(app, "/login/"))
    run = doctor_app(doctor_workdir, app, ("/login/",))
    f = get_finding(run, "login_csrf_rejected")
    assert f["severity"] == "error" and run.returncode == 1, summary(run)
    fix = f["fix"].get("django", "")
    assert "SECURE_PROXY_SSL_HEADER" in fix and f'CSRF_TRUSTED_ORIGINS = ["{PUBLIC_URL}"]' in fix, fix
    assert "POST /login/" in f["evidence"] and "csrf verification failed" in f["evidence"].lower(), f
    assert f"Origin: {PUBLIC_URL}" in f["evidence"] and "csrfmiddlewaretoken" in f["evidence"], f
    posts = _posts_in_log(app, "/login/")[before:]
    assert len(posts) == 1 and '" 403 ' in posts[0], posts  # posted once, refused by CSRF


def test_django_fixed_login_form_is_a_clean_rejection(sample_apps, doctor_workdir):
    app = sample_apps.get("django", DJANGO_FIXED)
    before = len(_posts_in_log(app, "/login/"))
    run = doctor_app(doctor_workdir, app, ("/", "/login/"))
    assert_clean(run)
    # It did post, and the app answered "wrong password" (401), not 403.
    posts = _posts_in_log(app, "/login/")[before:]
    assert len(posts) == 1 and '" 401 ' in posts[0], posts


def test_no_forms_posts_nothing(sample_apps, doctor_workdir):
    app = sample_apps.get("django", DJANGO_BROKEN)
    before = len(_posts_in_log(app, "/login/"))
    run = doctor_app(doctor_workdir, app, ("/login/",), extra=["--no-forms"])
    assert_absent(run, "login_csrf_rejected")
    assert _posts_in_log(app, "/login/")[before:] == [], read_log(app.log)


def test_express_login_form_refused_without_trust_proxy(sample_apps, doctor_workdir):
    """cookie.secure without trust proxy: the session (and its CSRF secret)
    is never sent, so the login POST fails its CSRF check."""
    run = doctor_app(doctor_workdir, sample_apps.get("express", EXPRESS_BROKEN), ("/login",))
    f = get_finding(run, "login_csrf_rejected")
    assert f["severity"] == "error", f
    assert "trust proxy" in f["fix"].get("express", ""), f["fix"]
    assert "POST /login" in f["evidence"] and "csrf token missing or wrong" in f["evidence"].lower(), f
    fixed = doctor_app(doctor_workdir, sample_apps.get("express", EXPRESS_FIXED), ("/login",))
    assert_absent(fixed, "login_csrf_rejected")
    assert_clean(fixed)


# --------------------------------------------------------------------------- findings no framework app triggers
# Each case runs the doctor on one route of tests/apps/quirks_app.py, and where
# the finding has a threshold, just under it too (so "always reported" fails).


@pytest.mark.parametrize(
    "path,code,severity,evidence",
    [
        ("/cookie?len=4097", "cookie_too_large", "error", "big: 4097 bytes"),
        ("/cookies?n=51", "too_many_cookies", "error", "51 distinct cookies"),
        ("/dup", "duplicate_cookie", "warning", "pref: Path=/ and Path=/dup"),
        ("/slow?ms=1300", "upstream_slow", "warning", "GET /slow?ms=1300"),
        ("/http10", "upstream_http10", "warning", "HTTP/1.0 response without keep-alive"),
        ("/reflect", "trusts_spoofed_forwarded", SPOOF_SEVERITY_ON_LOOPBACK, "spoofed.invalid"),
    ],
    ids=["cookie_too_large", "too_many_cookies", "duplicate_cookie", "upstream_slow", "upstream_http10", "spoof"],
)
def test_quirk_findings(sample_apps, doctor_workdir, path, code, severity, evidence):
    run = doctor_app(doctor_workdir, sample_apps.get("quirks", {}), (path,))
    f = get_finding(run, code)
    assert f["severity"] == severity, f
    text = f["title"] + " " + f["evidence"]
    assert evidence in text, f"{evidence!r} not in {text!r}"
    others = [c for c in codes(run) if c != code]
    assert not others, f"only {code} expected\n{summary(run)}"


@pytest.mark.parametrize(
    "path",
    ["/cookie?len=4096", "/cookies?n=50", "/slow?ms=0", "/healthz"],
)
def test_quirk_just_under_the_threshold_is_clean(sample_apps, doctor_workdir, path):
    run = doctor_app(doctor_workdir, sample_apps.get("quirks", {}), (path,))
    assert run.report["findings"] == [], summary(run)


# --------------------------------------------------------------------------- outside input never panics


def test_path_with_a_space_is_a_usage_error(sample_apps, doctor_workdir):
    # A reachable app: the old doctor connected first and then panicked building the request.
    run = doctor_app(doctor_workdir, sample_apps.get("quirks", {}), ("/a b",))
    assert run.returncode == 2, run.context()
    assert '"/a b"' in run.stderr and "%20" in run.stderr, run.context()
    assert "panicked" not in run.stderr, run.context()


def test_location_with_a_space_is_followed_as_a_browser_does(sample_apps, doctor_workdir):
    app = sample_apps.get("quirks", {})
    run = doctor_app(doctor_workdir, app, ("/space-redirect",))
    assert "panicked" not in run.stderr, run.context()
    assert run.returncode == 0 and run.report["notes"] == [], summary(run)
    seen = requests.get(f"{app.upstream}/seen", timeout=HTTP_TIMEOUT).json()
    assert ["GET", "/a%20b"] in [entry[:2] for entry in seen], seen


def test_cookie_bytes_go_back_unchanged(sample_apps, doctor_workdir):
    """A Set-Cookie value with a non-UTF-8 byte: the doctor sends it back as
    it came (the session check re-requests with it), never a made-up value."""
    app = sample_apps.get("quirks", {})
    run = doctor_app(doctor_workdir, app, ("/latin1-cookie",))
    seen = requests.get(f"{app.upstream}/seen", timeout=HTTP_TIMEOUT).json()
    sent = [cookie for method, target, cookie in seen if target == "/latin1-cookie" and cookie is not None]
    assert sent, f"the doctor never sent the cookie back\n{seen}\n{summary(run)}"
    assert all(cookie == "sid=caf\xe9" for cookie in sent), sent
