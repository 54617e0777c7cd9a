"""Shared pieces of the `[[route]]` end-to-end tests (tests/e2e/test_routes_*.py):
app processes (Werkzeug or Gunicorn, on TCP or a Unix socket) and a tlsfront
started from a config file with its admin listener.

Everything binds to 127.0.0.1 (or a Unix socket in the test's temp dir) and
every wait has a deadline. Readiness is awaited by polling the thing itself
(an app's /healthz, tlsfront's log line), never by a fixed sleep.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import ANSI_RE, REPO_ROOT, _LOGS, read_log, stop_process, tlsfront_bin

APPS_DIR = REPO_ROOT / "tests" / "apps"
ROUTES_APP = APPS_DIR / "routes_app.py"
MOUNTED_DEMO = APPS_DIR / "mounted_demo.py"

APP_START_TIMEOUT = 20.0
PROXY_START_TIMEOUT = 20.0
POLL = 0.02

LISTEN_RE = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")
ADMIN_RE = re.compile(r"admin endpoint on http://127\.0\.0\.1:(\d+)")


def wait_for(what: str, check: Callable[[], object], timeout: float, log: Path | None = None):
    """Polls `check` until it returns something truthy; fails the test with
    `what` (and the log's tail) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing is not up yet
            last_exc = exc
        if time.monotonic() > deadline:
            tail = f"\n{read_log(log)}" if log else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_exc}){tail}", pytrace=False)
        time.sleep(POLL)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (to ask an app directly)."""

    def __init__(self, path: str, timeout: float = 5.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def http_get(target: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET straight from an app: target is `127.0.0.1:PORT` or `unix:/path`."""
    if target.startswith("unix:"):
        conn: http.client.HTTPConnection = UnixHTTPConnection(target[len("unix:"):], timeout=timeout)
    else:
        host, port = target.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class AppProcess:
    name: str
    target: str  # `127.0.0.1:PORT` or `unix:/path`
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def boot_id(self) -> str:
        """Names the current start; the app reports it (routes_app /server)."""
        return f"{self.name}#{self.starts}"

    @property
    def server_url(self) -> str:
        """As written in a route's `servers`."""
        return self.target if self.target.startswith("unix:") else f"http://{self.target}"

    def start(self) -> "AppProcess":
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        _LOGS[self.name] = self.log
        self.starts += 1
        self.env["BOOT_ID"] = self.boot_id
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=str(APPS_DIR),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def healthy():
            if proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {proc.returncode}:\n{read_log(self.log)}", pytrace=False)
            status, body = http_get(self.target, "/healthz")
            return status == 200 and body == b"ok"

        wait_for(f"{self.name} to answer /healthz", healthy, APP_START_TIMEOUT, self.log)
        return self

    def stop(self) -> int | None:
        """SIGTERM (graceful: in-flight requests finish), wait for the exit."""
        if self.proc is not None:
            stop_process(self.proc)
            return self.proc.returncode
        return None


@dataclass
class Apps:
    """Every app process a test started; all stopped at teardown."""

    tmp: Path
    started: list[AppProcess] = field(default_factory=list)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        # Gunicorn reads its trust list from here when the flag is absent:
        # the tests decide it, not the environment they run in.
        env.pop("FORWARDED_ALLOW_IPS", None)
        env.update(extra)
        return env

    def werkzeug(self, name: str, script: Path, env: dict[str, str]) -> AppProcess:
        port = free_port()
        app = AppProcess(
            name=name,
            target=f"127.0.0.1:{port}",
            argv=[sys.executable, str(script)],
            env=self._env({"HOST": "127.0.0.1", "PORT": str(port), **env}),
            log=self.tmp / f"{name}.log",
        )
        self.started.append(app)
        return app.start()

    def gunicorn(self, name: str, bind: str, env: dict[str, str], extra_args: list[str] = ()) -> AppProcess:
        """routes_app under Gunicorn; `bind` is `127.0.0.1:PORT` or `unix:/path`.
        gthread worker: keep-alive connections, so tlsfront's pool reuses them."""
        app = AppProcess(
            name=name,
            target=bind,
            argv=[
                sys.executable, "-m", "gunicorn",
                "--bind", bind,
                "--workers", "1",
                "--worker-class", "gthread",
                "--threads", "8",
                "--graceful-timeout", "10",
                *extra_args,
                "routes_app:app",
            ],
            env=self._env(env),
            log=self.tmp / f"{name}.log",
        )
        self.started.append(app)
        return app.start()

    def stop_all(self) -> None:
        for app in self.started:
            app.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TlsFront:
    proc: subprocess.Popen
    log: Path
    port: int
    admin_port: int
    ca: Path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def readyz(self) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()


def start_tlsfront(workdir: Path, certdir: Path, routes_toml: str, name: str = "tlsfront") -> TlsFront:
    """tlsfront with `routes_toml` (the `[[route]]` tables, and whatever else)
    after a [listen]/[tls]/[admin] header on ephemeral loopback ports."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "tlsfront.toml"
    config.write_text(
        "[listen]\n"
        'https = "127.0.0.1:0"\n'
        "[tls]\n"
        f'cert = "{certdir / "cert.pem"}"\n'
        f'key = "{certdir / "key.pem"}"\n'
        "[log]\n"
        'access = "off"\n'
        "[admin]\n"
        'listen = "127.0.0.1:0"\n' + routes_toml
    )
    log = workdir / f"{name}.log"
    _LOGS[name] = log
    cmd = [str(tlsfront_bin()), "run", "-c", str(config)]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            cmd,
            cwd=str(workdir),
            env=dict(os.environ, NO_COLOR="1"),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )

    def ports():
        if proc.poll() is not None:
            pytest.fail(
                f"tlsfront exited with {proc.returncode}\nconfig:\n{config.read_text()}\n{read_log(log)}",
                pytrace=False,
            )
        text = ANSI_RE.sub("", read_log(log, limit=1 << 20))
        https, admin = LISTEN_RE.search(text), ADMIN_RE.search(text)
        return (int(https.group(1)), int(admin.group(1))) if https and admin else None

    try:
        port, admin_port = wait_for("tlsfront to log its listeners", ports, PROXY_START_TIMEOUT, log)
    except BaseException:
        stop_process(proc)
        raise
    return TlsFront(proc=proc, log=log, port=port, admin_port=admin_port, ca=certdir / "ca.pem")
