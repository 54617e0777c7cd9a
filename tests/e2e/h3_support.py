"""Shared pieces of the HTTP/3 end-to-end tests (test_http3.py,
test_http3_browser.py): a tlsfront started from a config file on a port
chosen here (free for TCP and UDP alike, as HTTP/3 listens on UDP at the
same address and port as `listen.https`), its access log and metrics, the
HTTP/3 test app, and small TCP clients (HTTP/1.1 with requests, HTTP/2 with
the h2 package).

Every wait has a deadline; readiness is awaited by polling the thing itself.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import ANSI_RE, REPO_ROOT, _LOGS, read_log, stop_process, tlsfront_bin

H3_APP = REPO_ROOT / "tests" / "apps" / "h3_app.py"

START_TIMEOUT = 20.0
POLL = 0.02

LISTEN_RE = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")
ADMIN_RE = re.compile(r"admin endpoint on http://127\.0\.0\.1:(\d+)")
# One access-log line in the `common` format (what matters here: the request
# line, the status, and the trailing kx=).
ACCESS_RE = re.compile(
    r'^(?P<ip>\S+) - - \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S*) (?P<proto>HTTP/[0-9.]+)" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) .*$"
)


def wait_for(what: str, check: Callable[[], object], timeout: float, log: Path | None = None):
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            tail = f"\n{read_log(log)}" if log else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_exc}){tail}", pytrace=False)
        time.sleep(POLL)


# --------------------------------------------------------------------------- ports


def udp_port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when binding UDP host:port fails with EADDRINUSE (someone has it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise
    finally:
        s.close()
    return False


def free_dual_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP right now."""
    for _ in range(200):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                u.close()
            return port
        finally:
            t.close()
    raise RuntimeError("no port free for both TCP and UDP after 200 tries")


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_sockets_of(pid: int) -> list[str]:
    """`ss -ulnp` lines of UDP sockets that process `pid` holds."""
    res = subprocess.run(["ss", "-H", "-u", "-a", "-n", "-p"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, f"ss failed: {res.stderr}"
    return [line for line in res.stdout.splitlines() if f"pid={pid}," in line]


# --------------------------------------------------------------------------- certificates


def make_certdir(out: Path, hosts: list[str]) -> Path:
    """`tlsfront cert --out out --host ...`: a development CA and a leaf for hosts."""
    out.mkdir(parents=True, exist_ok=True)
    args = [str(tlsfront_bin()), "cert", "--out", str(out)]
    for h in hosts:
        args += ["--host", h]
    res = subprocess.run(args, cwd=str(out), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}", pytrace=False)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert (out / name).is_file(), f"tlsfront cert did not write {name}"
    return out


def spki_sha256_b64(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the first certificate in the file
    (tlsfront's cert.pem is leaf + CA): Chromium's --ignore-certificate-errors-spki-list."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem = cert_pem.read_bytes()
    first = pem[: pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")]
    cert = x509.load_pem_x509_certificate(first)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


# --------------------------------------------------------------------------- the test app


@dataclass
class H3App:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return read_log(self.log, limit=1 << 22)

    def stop(self) -> None:
        stop_process(self.proc)


def start_h3_app(workdir: Path, name: str = "h3app") -> H3App:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port()
    log = workdir / f"{name}.log"
    _LOGS[name] = log
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), APP_NAME=name, PYTHONUNBUFFERED="1")
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, str(H3_APP)],
            cwd=str(workdir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    app = H3App(name=name, port=port, proc=proc, log=log)

    def healthy():
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{read_log(log)}", pytrace=False)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            return r.status == 200 and r.read() == b"ok"
        finally:
            conn.close()

    try:
        wait_for(f"{name} to answer /healthz", healthy, START_TIMEOUT, log)
    except BaseException:
        stop_process(proc)
        raise
    return app


# --------------------------------------------------------------------------- tlsfront


@dataclass
class Front:
    proc: subprocess.Popen
    log: Path
    config: Path
    port: int
    admin_port: int
    certdir: Path

    @property
    def ca(self) -> Path:
        return self.certdir / "ca.pem"

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    def log_text(self) -> str:
        return ANSI_RE.sub("", read_log(self.log, limit=1 << 24))

    def alive(self) -> bool:
        return self.proc.poll() is None

    # ---- access log

    def access_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if ACCESS_RE.match(line)]

    def wait_access(self, needle: str, timeout: float = 5.0) -> str:
        """The first access-log line containing `needle` (the line is written when
        the response ends, which can be just after the client has it)."""

        def find():
            for line in self.access_lines():
                if needle in line:
                    return line
            return None

        return wait_for(f"an access-log line with {needle!r}", find, timeout, self.log)

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        rx = re.compile(pattern)
        return wait_for(f"log line /{pattern}/", lambda: rx.search(self.log_text()), timeout, self.log)

    # ---- admin

    def admin_get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def metrics(self) -> str:
        status, text = self.admin_get("/metrics")
        assert status == 200, text
        return text

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    # ---- signals

    def reload(self, config_text: str, timeout: float = 10.0) -> None:
        """Writes the new config, SIGHUP, and waits until the reload is counted
        (fails the test when it was rejected)."""
        before_ok = self.metric("tlsfront_config_reloads_total")
        before_bad = self.metric("tlsfront_config_reload_failures_total")
        self.config.write_text(config_text)
        self.proc.send_signal(signal.SIGHUP)

        def done():
            if self.metric("tlsfront_config_reload_failures_total") > before_bad:
                pytest.fail(f"reload rejected:\n{self.log_text()[-4000:]}", pytrace=False)
            return self.metric("tlsfront_config_reloads_total") > before_ok

        wait_for("the reload to be counted", done, timeout, self.log)

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


def front_config(
    port: int,
    certdir: Path,
    *,
    upstream: str | None = None,
    listen: str = "",
    tls: str = "",
    log: str = 'access = "common"\n',
    limits: str = "",
    tail: str = "",
) -> str:
    text = (
        "[listen]\n"
        f'https = "127.0.0.1:{port}"\n' + listen + "\n"
        "[tls]\n"
        f'cert = "{certdir / "cert.pem"}"\n'
        f'key = "{certdir / "key.pem"}"\n' + tls + "\n"
        "[log]\n" + log + "\n"
        "[admin]\n"
        'listen = "127.0.0.1:0"\n'
    )
    if limits:
        text += "\n[limits]\n" + limits + "\n"
    if upstream:
        text += f'\n[upstream]\nurl = "{upstream}"\n'
    return text + "\n" + tail


def start_front(workdir: Path, certdir: Path, config_text: str, port: int, name: str = "tlsfront-h3") -> Front:
    """tlsfront run -c <config>; waits for its https and admin listeners to be
    logged. `port` must be the one written in the config's listen.https."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "tlsfront.toml"
    config.write_text(config_text)
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
        logged_port, admin_port = wait_for("tlsfront to log its listeners", ports, START_TIMEOUT, log)
        assert logged_port == port, f"tlsfront listens on {logged_port}, config said {port}"
    except BaseException:
        stop_process(proc)
        raise
    return Front(proc=proc, log=log, config=config, port=port, admin_port=admin_port, certdir=certdir)


# --------------------------------------------------------------------------- TCP clients


def h2_get(port: int, path: str, cafile: Path, authority: str | None = None, timeout: float = 10.0):
    """One HTTP/2 GET over TLS (ALPN h2 only) with the h2 package; returns
    (status, headers as a list of (name, value) str pairs, body)."""
    import h2.config
    import h2.connection
    import h2.events

    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", authority or f"localhost:{port}"),
                (":path", path),
            ],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        status, headers, body = None, [], b""
        deadline = time.monotonic() + timeout
        ended = False
        while not ended:
            assert time.monotonic() < deadline, "HTTP/2 response did not end in time"
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    for k, v in ev.headers:
                        if k == ":status":
                            status = int(v)
                        else:
                            headers.append((k, v))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise AssertionError(f"HTTP/2 stream reset: {ev}")
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        return status, headers, body
    finally:
        sock.close()


def json_body(resp) -> dict:
    try:
        return json.loads(resp.body)
    except ValueError:
        raise AssertionError(f"not JSON: {resp!r}")
