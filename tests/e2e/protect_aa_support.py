"""Shared pieces of the access / rate-limit / auth end-to-end tests
(test_protect_access.py, test_protect_auth.py).

    requests or a raw PROXY-protocol socket --https://localhost:<port>-->
        tlsfront (config written per test) --http://127.0.0.1:<port>--> echo_app.py
                                           --http or unix:--> auth_app.py (forward auth)

Everything binds to 127.0.0.1 (or a Unix socket under /tmp); every wait has a
deadline; readiness is awaited by polling, never by a fixed sleep.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import ANSI_RE, _LOGS, read_log, stop_process, tlsfront_bin
from routes_support import ADMIN_RE, APPS_DIR, LISTEN_RE, AppProcess, Apps, http_get, wait_for

ECHO_APP = APPS_DIR / "echo_app.py"
AUTH_APP = APPS_DIR / "auth_app.py"

TIMEOUT = 10
START_TIMEOUT = 20.0

# A common-format access-log line: `ip - user [time] "METHOD path PROTO" status bytes ...`
ACCESS_RE = re.compile(
    r'^(?P<ip>\S+) - (?P<user>\S+) \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S*) (?P<proto>HTTP/[0-9.]+)" '
    r"(?P<status>\d{3}) .*$"
)


# --------------------------------------------------------------------------- apps


def start_echo(apps: Apps, name: str = "echo-app") -> AppProcess:
    return apps.werkzeug(name, ECHO_APP, {})


def start_auth_tcp(apps: Apps, name: str = "auth-app", slow_seconds: float = 4.0) -> AppProcess:
    return apps.werkzeug(name, AUTH_APP, {"SLOW_SECONDS": str(slow_seconds)})


def start_auth_unix(apps: Apps, sock: Path, name: str = "auth-app-unix") -> AppProcess:
    app = AppProcess(
        name=name,
        target=f"unix:{sock}",
        argv=[sys.executable, str(AUTH_APP)],
        env=apps._env({"UNIX_SOCKET": str(sock)}),
        log=apps.tmp / f"{name}.log",
    )
    apps.started.append(app)
    return app.start()


def app_json(app: AppProcess, path: str) -> dict:
    """GET straight from an app (not through tlsfront)."""
    status, body = http_get(app.target, path, timeout=5)
    assert status == 200, (path, status, body)
    return json.loads(body)


def counts(echo: AppProcess) -> dict:
    """{"total": N, "paths": {path: n}} as counted by the echo app."""
    return app_json(echo, "/_counts")


def count_of(echo: AppProcess, path: str) -> int:
    return counts(echo)["paths"].get(path, 0)


def header_values(headers: list, name: str) -> list[str]:
    """Values of `name` (case-insensitive) in a raw [[name, value], ...] list."""
    return [v for k, v in headers if k.lower() == name.lower()]


def auth_last(auth: AppProcess) -> dict:
    return app_json(auth, "/last")


# --------------------------------------------------------------------------- tlsfront


@dataclass
class Front:
    proc: subprocess.Popen
    log: Path
    config: Path
    port: int
    admin_port: int
    ca: Path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def session(self) -> requests.Session:
        s = requests.Session()
        s.verify = str(self.ca)
        s.trust_env = False
        return s

    def log_text(self) -> str:
        return ANSI_RE.sub("", read_log(self.log, limit=1 << 24))

    def access_lines(self) -> list[re.Match]:
        out = []
        for line in self.log_text().splitlines():
            m = ACCESS_RE.match(line)
            if m:
                out.append(m)
        return out

    def wait_access(self, path: str, status: int, timeout: float = 5.0) -> re.Match:
        """The access-log line of `path` with `status` (written when the response ends)."""

        def find():
            for m in self.access_lines():
                if m.group("path") == path and m.group("status") == str(status):
                    return m
            return None

        return wait_for(f"an access-log line for {path} with status {status}", find, timeout, self.log)

    def metrics(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            text = r.read().decode()
            assert r.status == 200, text
            return text
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    def refused(self, reason: str) -> float:
        return self.metric("tlsfront_refused_requests_total", reason=reason)

    def wait_refused(self, reason: str, expected: float, timeout: float = 5.0) -> None:
        """Waits until the counter reaches `expected`, then asserts it is exactly that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.refused(reason) < expected:
            time.sleep(0.05)
        got = self.refused(reason)
        assert got == expected, (
            f'tlsfront_refused_requests_total{{reason="{reason}"}} = {got}, expected {expected}\n'
            + "\n".join(line for line in self.metrics().splitlines() if "refused" in line)
        )

    def stop(self) -> None:
        stop_process(self.proc)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def config_text(
    certdir: Path,
    upstream: str | None,
    body: str = "",
    *,
    listen: str = "",
    forwarded: str = "",
    log: str = 'access = "common"',
) -> str:
    """A whole tlsfront config: listeners on ephemeral loopback ports, the
    generated certificate, the common access log on stdout, the admin
    endpoint, `[upstream] url = upstream`, then `body` (protection tables and
    [[route]]s)."""
    text = (
        "[listen]\n"
        'https = "127.0.0.1:0"\n' + listen + "\n"
        "[tls]\n"
        f'cert = "{certdir / "cert.pem"}"\n'
        f'key = "{certdir / "key.pem"}"\n'
        "[log]\n" + log + "\n"
        "[admin]\n"
        'listen = "127.0.0.1:0"\n'
    )
    if forwarded:
        text += "[forwarded]\n" + forwarded + "\n"
    if upstream:
        text += f'[upstream]\nurl = "{upstream}"\n'
    return text + "\n" + body + "\n"


def write_config(workdir: Path, text: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "tlsfront.toml"
    config.write_text(text)
    return config


def start_front(workdir: Path, certdir: Path, text: str, name: str = "tlsfront") -> Front:
    """`tlsfront run -c <config>`; waits for its https and admin listeners."""
    config = write_config(workdir, text)
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
        text_ = ANSI_RE.sub("", read_log(log, limit=1 << 20))
        https, admin = LISTEN_RE.search(text_), ADMIN_RE.search(text_)
        return (int(https.group(1)), int(admin.group(1))) if https and admin else None

    try:
        port, admin_port = wait_for("tlsfront to log its listeners", ports, START_TIMEOUT, log)
    except BaseException:
        stop_process(proc)
        raise
    return Front(proc=proc, log=log, config=config, port=port, admin_port=admin_port, ca=certdir / "ca.pem")


def check(workdir: Path, text: str) -> subprocess.CompletedProcess:
    """`tlsfront check --config <file>` on `text`; stdout and stderr merged in `.out`."""
    config = write_config(workdir, text)
    res = subprocess.run(
        [str(tlsfront_bin()), "check", "--config", str(config)],
        cwd=str(workdir),
        env=dict(os.environ, NO_COLOR="1"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    res.out = ANSI_RE.sub("", res.stdout + "\n" + res.stderr)
    return res


# --------------------------------------------------------------------------- PROXY protocol client


class ProxyProtocolHTTPS(http.client.HTTPSConnection):
    """HTTPS over a TCP connection that starts with a PROXY v1 header naming
    `src_ip` as the client (tlsfront must trust 127.0.0.1 as a proxy)."""

    def __init__(self, port: int, src_ip: str, ca: Path, src_port: int = 5555, timeout: float = TIMEOUT):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["http/1.1"])
        super().__init__("localhost", port, context=ctx, timeout=timeout)
        self.header = f"PROXY TCP4 {src_ip} 127.0.0.1 {src_port} 443\r\n".encode()

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        sock.sendall(self.header)
        self.sock = self._context.wrap_socket(sock, server_hostname="localhost")


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


def pp_request(front: Front, src_ip: str, path: str, headers: dict | None = None, method: str = "GET") -> RawResponse:
    conn = ProxyProtocolHTTPS(front.port, src_ip, front.ca)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return RawResponse(r.status, r.headers, r.read())
    finally:
        conn.close()
