"""Shared harness of the long hostile-input and fault suite (tests/long).

- `Tlsfront`: one real tlsfront process on ephemeral loopback ports, with a
  config written for the part (limits, upstream, admin endpoint), its port
  and admin port parsed from its log, and its RSS, fd count and metrics.
- `Upstream`: one of the small asyncio upstreams of upstreams.py, run as its
  own process (so the load generator's event loop never slows it down).
- A minimal asyncio HTTP/1.1 client that tells a complete body from a
  truncated one (Content-Length and chunked framing checked byte for byte).
- `Result`: what one part reports (PASS/FAIL and its key numbers).

Everything binds and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HOST = "127.0.0.1"
SNI = "localhost"

LISTEN_RE = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")
ADMIN_RE = re.compile(r"admin endpoint on http://127\.0\.0\.1:(\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")

# A 64 KiB block of a fixed pattern: bodies of /bytes are this block repeated.
PATTERN = bytes((i * 7 + 13) % 251 for i in range(65536))


def log(msg: str) -> None:
    print(msg, flush=True)


def raise_fd_limit(want: int = 1 << 20) -> int:
    """Raise this process's open-files soft limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else want
    target = min(target, want)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tlsfront_bin() -> Path:
    """$TLSFRONT_BIN, else the newer of target/release and target/debug."""
    env = os.environ.get("TLSFRONT_BIN")
    if env:
        return Path(env)
    candidates = [REPO / "target" / "release" / "tlsfront", REPO / "target" / "debug" / "tlsfront"]
    existing = [c for c in candidates if c.is_file() and os.access(c, os.X_OK)]
    if not existing:
        raise SystemExit("tlsfront binary not found: run `cargo build --release` or set TLSFRONT_BIN")
    return max(existing, key=lambda p: p.stat().st_mtime)


_WORKROOT: Path | None = None


def workroot() -> Path:
    global _WORKROOT
    if _WORKROOT is None:
        base = os.environ.get("LONG_WORKDIR")
        if base:
            _WORKROOT = Path(base)
            _WORKROOT.mkdir(parents=True, exist_ok=True)
        else:
            # Under tests/long/.work (git-ignored), newest runs kept for inspection.
            base = HERE / ".work"
            base.mkdir(exist_ok=True)
            _WORKROOT = Path(tempfile.mkdtemp(prefix=time.strftime("run-%Y%m%d-%H%M%S-"), dir=base))
        # Helper processes (attackers, upstreams) share the same directory and CA.
        os.environ["LONG_WORKDIR"] = str(_WORKROOT)
    return _WORKROOT


def workdir(name: str) -> Path:
    d = workroot() / name
    d.mkdir(parents=True, exist_ok=True)
    return d


_CERTS: Path | None = None


def certs() -> Path:
    """The development CA and certificate, written once per suite run by
    `tlsfront cert` (as a user would)."""
    global _CERTS
    if _CERTS is None:
        out = workdir("certs")
        if not (out / "cert.pem").is_file():
            res = subprocess.run(
                [str(tlsfront_bin()), "cert", "--out", str(out)],
                cwd=str(out),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if res.returncode != 0:
                raise RuntimeError(f"tlsfront cert failed: {res.stdout}\n{res.stderr}")
        _CERTS = out
    return _CERTS


def client_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context trusting only the dev CA tlsfront generated."""
    ctx = ssl.create_default_context(cafile=str(certs() / "ca.pem"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_text(path: Path, limit: int = 1 << 22) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return ANSI_RE.sub("", f.read().decode(errors="replace"))
    except OSError:
        return ""


class Tlsfront:
    """One tlsfront process. `sections` maps a TOML table name to its keys,
    e.g. {"limits": {"header_read_timeout": "5s"}}."""

    def __init__(self, name: str, upstream_url: str, sections: dict | None = None, stdout_devnull: bool = False):
        self.name = name
        # The access log goes to stdout: discard it under load (the
        # application log, stderr, is kept in tlsfront.log).
        self.stdout_devnull = stdout_devnull
        self.dir = workdir(name)
        self.upstream_url = upstream_url
        self.sections = {k: dict(v) for k, v in (sections or {}).items()}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0
        self.config = self.dir / "tlsfront.toml"
        self.logfile = self.dir / "tlsfront.log"

    def write_config(self) -> None:
        c = certs()
        s = {
            "listen": {"https": f"{HOST}:0"},
            "tls": {"cert": str(c / "cert.pem"), "key": str(c / "key.pem")},
            "upstream": {"url": self.upstream_url},
            "log": {"access": "off", "level": "info"},
            "admin": {"listen": f"{HOST}:0"},
        }
        for table, keys in self.sections.items():
            s.setdefault(table, {}).update(keys)
        lines = []
        for table, keys in s.items():
            lines.append(f"[{table}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
            lines.append("")
        self.config.write_text("\n".join(lines))

    def start(self, timeout: float = 20.0) -> "Tlsfront":
        self.write_config()
        env = dict(os.environ, NO_COLOR="1")
        env.pop("TLSFRONT_CONFIG", None)
        with open(self.logfile, "ab") as logf:
            self.proc = subprocess.Popen(
                [str(tlsfront_bin()), "run", "-c", str(self.config)],
                cwd=str(self.dir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if self.stdout_devnull else logf,
                stderr=logf if self.stdout_devnull else subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            text = read_text(self.logfile)
            m, a = LISTEN_RE.search(text), ADMIN_RE.search(text)
            if m and a:
                self.port, self.admin_port = int(m.group(1)), int(a.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"tlsfront ({self.name}) exited with {self.proc.returncode}:\n{text[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tlsfront ({self.name}) did not start within {timeout}s:\n{text[-4000:]}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_kinds(self, upstream_port: int) -> dict[str, int]:
        """tlsfront's open fds by kind: `client` (TCP connections to its HTTPS
        port), `upstream` (TCP connections to `upstream_port`), `other` (the
        rest: listeners, admin connections, files, pipes, epoll, ...) and
        `total`. Sockets are matched by inode in /proc/net/tcp{,6} (IPv4 and
        IPv6, this network namespace)."""
        by_inode: dict[str, tuple[int, int, str]] = {}
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        cols = line.split()
                        local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                        by_inode[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                                           state)
            except OSError:
                pass
        kinds = {"client": 0, "upstream": 0, "other": 0, "total": 0}
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            kinds["total"] += 1
            sock = by_inode.get(target[len("socket:["):-1]) if target.startswith("socket:[") else None
            if sock and sock[2] != "0A" and sock[0] == self.port:  # 0A: LISTEN
                kinds["client"] += 1
            elif sock and sock[1] == upstream_port:
                kinds["upstream"] += 1
            else:
                kinds["other"] += 1
        return kinds

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{HOST}:{self.admin_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def healthz(self) -> int:
        try:
            return self.admin_get("/healthz")[0]
        except OSError:
            return -1

    def metrics(self) -> dict[str, float]:
        """`name{labels}` (or `name`) → value, from /metrics."""
        _, text = self.admin_get("/metrics")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = METRIC_RE.match(line)
            if m:
                try:
                    out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
                except ValueError:
                    pass
        return out

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)

    def sighup(self) -> None:
        os.kill(self.pid, signal.SIGHUP)

    def log_tail(self, n: int = 4000) -> str:
        return read_text(self.logfile)[-n:]

    def log_count(self, needle: str) -> int:
        return read_text(self.logfile, limit=1 << 26).count(needle)

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            return None


class Upstream:
    """One small asyncio upstream (upstreams.py MODE) in its own process."""

    def __init__(self, mode: str, port: int = 0, name: str | None = None, extra: list[str] | None = None):
        self.mode = mode
        self.port = port
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.logfile = workdir("upstreams") / f"{name or mode}.log"

    def start(self, timeout: float = 10.0) -> "Upstream":
        logf = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "upstreams.py"), self.mode, "--port", str(self.port), *self.extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=logf,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        logf.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(b"PORT "):
                self.port = int(line.split()[1])
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"upstream {self.mode} did not start: {line!r} {read_text(self.logfile)[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# ---------------------------------------------------------------- HTTP/1.1


class Truncated(Exception):
    """The body ended (EOF or error) before its framing said it was complete."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    length: int = 0  # body bytes received
    complete: bool = False  # framing (Content-Length / last chunk) fully satisfied
    error: str = ""  # why the body is incomplete, if it is
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


async def open_tls(port: int, ctx: ssl.SSLContext, timeout: float = 10.0):
    return await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=SNI, limit=1 << 20), timeout
    )


def request_bytes(method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                  host: str = SNI) -> bytes:
    h = {"Host": host, "User-Agent": "tlsfront-long"}
    if body is not None:
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader, method: str = "GET", keep_body: bool = True,
                        max_keep: int = 1 << 20, verify_pattern: bool = False,
                        stop_after: int | None = None) -> Response:
    """Reads one response. Never raises for a truncated body: it returns
    `complete=False` with `error` set. Raises for a missing/broken head.
    `stop_after`: stop reading the body after that many bytes (the caller
    then abandons the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
    resp = Response(status=status, headers=headers)
    conn = (resp.header("connection") or "").lower()
    resp.keep_alive = "close" not in conn and parts[0] == "HTTP/1.1"
    chunks: list[bytes] = []
    kept = 0

    def take(data: bytes) -> None:
        nonlocal kept
        if verify_pattern and status == 200:
            off = resp.length % len(PATTERN)
            pos = 0
            while pos < len(data):
                n = min(len(data) - pos, len(PATTERN) - off)
                if data[pos:pos + n] != PATTERN[off:off + n]:
                    raise ValueError(f"body byte mismatch at offset {resp.length + pos}")
                pos += n
                off = 0
        resp.length += len(data)
        if keep_body and kept < max_keep:
            chunks.append(data[: max_keep - kept])
            kept += min(len(data), max_keep - kept)

    try:
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            resp.complete = True
        elif "chunked" in (resp.header("transfer-encoding") or "").lower():
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    resp.complete = True
                    break
                remaining = size
                while remaining:
                    data = await reader.read(min(remaining, 1 << 16))
                    if not data:
                        raise Truncated("EOF inside a chunk")
                    take(data)
                    remaining -= len(data)
                    if stop_after is not None and resp.length >= stop_after:
                        resp.error = "stopped by client"
                        return resp
                if await reader.readexactly(2) != b"\r\n":
                    raise ValueError("bad chunk terminator")
        elif resp.header("content-length") is not None:
            remaining = int(resp.header("content-length"))
            while remaining:
                data = await reader.read(min(remaining, 1 << 16))
                if not data:
                    raise Truncated(f"EOF after {resp.length} of {resp.length + remaining} bytes")
                take(data)
                remaining -= len(data)
                if stop_after is not None and resp.length >= stop_after:
                    resp.error = "stopped by client"
                    return resp
            resp.complete = True
        else:
            # Close-delimited: complete only on a clean EOF.
            resp.keep_alive = False
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                take(data)
                if stop_after is not None and resp.length >= stop_after:
                    resp.error = "stopped by client"
                    return resp
            resp.complete = True
    except (Truncated, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as e:
        resp.error = f"{type(e).__name__}: {e}"
        resp.complete = False
    resp.body = b"".join(chunks)
    return resp


async def close_writer(writer: asyncio.StreamWriter, abort: bool = False) -> None:
    try:
        if abort:
            writer.transport.abort()
        else:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:
        pass


async def https_get(port: int, ctx: ssl.SSLContext, path: str = "/", timeout: float = 10.0,
                    **kw) -> Response:
    """One GET on a fresh TLS connection (closed afterwards)."""
    reader, writer = await open_tls(port, ctx, timeout)
    try:
        writer.write(request_bytes("GET", path, {"Connection": "close"}))
        return await asyncio.wait_for(read_response(reader, **kw), timeout)
    finally:
        await close_writer(writer)


# ---------------------------------------------------------------- results


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Result:
    name: str
    passed: bool = True
    summary: str = ""
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((what, bool(ok), detail))
        if not ok:
            self.passed = False
        log(f"  [{'ok' if ok else 'FAIL'}] {what}" + (f": {detail}" if detail else ""))
        return bool(ok)

    def note(self, what: str) -> None:
        """An observation that does not decide PASS/FAIL (reported in the summary)."""
        self.notes.append(what)
        log(f"  [note] {what}")

    def line(self) -> str:
        return f"PART {self.name}: {'PASS' if self.passed else 'FAIL'} {self.summary}"


def wait_until(pred, timeout: float, interval: float = 0.25):
    """Polls pred() until truthy or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
