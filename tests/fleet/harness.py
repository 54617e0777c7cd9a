"""The fleet test's harness: three tlsfront replicas behind HAProxy, one
pebble, one app (conftest.py starts them, test_fleet.py runs the parts).

    clients (127.0.0.10+) --TLS--> HAProxy 127.0.0.1:P (mode tcp)
        --PROXY v2 + TLS--> tlsfront r1 127.0.0.2 / r2 127.0.0.3 / r3 127.0.0.4
        --http--> echo_app.py 127.0.0.1 (says which replica and which client)

    HAProxy checks GET /readyz on each replica's admin port (127.0.0.x:A):
    inter 200ms fall 1 rise 2, retries 3, option redispatch.

    pebble validates tls-alpn-01 on 127.0.0.1:P, i.e. through HAProxy: a
    ClientHello offering ALPN acme-tls/1 goes to a second backend with the
    same three replicas, checked on /healthz instead of /readyz. A replica
    is not ready (/readyz 503) until it has its certificates, so behind the
    /readyz backend alone a new fleet never gets its first certificate (see
    docs/fleet.md). Any replica answers the challenge: the key authorization
    is in the shared storage.

    All three share one acme.storage directory: one orders each name (a
    lock file per name), the others pick the certificate up from storage.

Everything binds 127.0.0.x. Processes are stopped by the fixtures'
finalizers; the logs stay under tests/fleet/.work/run-*/ (git-ignored, the
three newest runs kept), with results.json, the numbers of the run.

Environment:
    TLSFRONT_BIN        the binary (default <repo>/target/debug/tlsfront)
    FLEET_ROLLING_RUNS  rolling restarts with shutdown_delay (default 20)
    FLEET_ZERO_RUNS     rolling restarts with shutdown_delay = "0s" (default 3)
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = HERE / ".work"

NAMES = ["one.fleet.example.com", "two.fleet.example.com"]
REPLICA_HOSTS = {"r1": "127.0.0.2", "r2": "127.0.0.3", "r3": "127.0.0.4"}
CHECK_INTER_MS = 200
CHECK_FALL = 1
CHECK_RISE = 2
SHUTDOWN_DELAY = "1s"  # above inter x fall (200 ms) plus margin
SHUTDOWN_TIMEOUT = "10s"

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def tlsfront_bin() -> Path:
    return Path(os.environ.get("TLSFRONT_BIN", REPO / "target" / "debug" / "tlsfront"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_text(path: Path, limit: int = 1 << 24) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return ANSI_RE.sub("", f.read().decode(errors="replace"))
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def wait_for(what: str, cond, timeout: float, interval: float = 0.05, detail=lambda: ""):
    """Polls `cond` until it returns something truthy, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{detail()}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def proxy_v2_header(src: str, src_port: int, dst: str, dst_port: int) -> bytes:
    """A PROXY protocol v2 header (PROXY command, TCP over IPv4)."""
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", src_port, dst_port)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


# ---------------------------------------------------------------- results


RESULTS: "Results | None" = None  # this session's, for the report


class Results:
    """The run's numbers, written to .work/results.json (and the run dir)."""

    def __init__(self, rundir: Path):
        global RESULTS
        RESULTS = self
        self.rundir = rundir
        def first_line(cmd: list[str]) -> str:
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=str(REPO))
                return (out.stdout or out.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return "?"

        self.data: dict = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "binary": f"{tlsfront_bin()} ({first_line([str(tlsfront_bin()), '--version'])})",
            "tree": first_line(["git", "log", "-1", "--format=%h %ci"]),
            "haproxy": first_line(["haproxy", "-v"]),
            "nproc": os.cpu_count(),
        }

    def put(self, key: str, value) -> None:
        self.data[key] = value
        text = json.dumps(self.data, indent=2)
        (self.rundir / "results.json").write_text(text)
        (WORK / "results.json").write_text(text)


# ---------------------------------------------------------------- pebble


class Pebble:
    """pebble + pebble-challtestsrv (Debian package pebble), as tests/acme.rs
    starts them: challtestsrv answers every DNS question with 127.0.0.1,
    pebble validates tls-alpn-01 on `tls_port` and http-01 on `http_port`."""

    def __init__(self, dir: Path, http_port: int, tls_port: int):
        self.dir = dir
        self.http_port = http_port
        self.tls_port = tls_port
        self.port = free_port()
        self.management = free_port()
        self.dns = free_port()
        self.log = dir / "pebble.log"
        self.challtest: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Pebble":
        # pebble's own HTTPS certificate, from a CA tlsfront is told to trust.
        certs = self.dir / "https"
        res = subprocess.run(
            [str(tlsfront_bin()), "cert", "--out", str(certs), "--host", "127.0.0.1", "--host", "localhost"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=str(self.dir),
        )
        assert res.returncode == 0, f"tlsfront cert: {res.stdout}\n{res.stderr}"
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(certs / "cert.pem"),
                "privateKey": str(certs / "key.pem"),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.dir / "pebble.json").write_text(json.dumps(config))
        with open(self.dir / "challtestsrv.log", "wb") as logf:
            self.challtest = subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv4", "127.0.0.1",
                    "-defaultIPv6", "",
                    "-dns01", f"127.0.0.1:{self.dns}",
                    "-management", f"127.0.0.1:{free_port()}",
                    "-http01", "",
                    "-https01", "",
                    "-tlsalpn01", "",
                ],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                ["pebble", "-config", str(self.dir / "pebble.json"), "-dnsserver", f"127.0.0.1:{self.dns}"],
                env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            for port in (self.port, self.management):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
            return True

        wait_for("pebble listening", up, 20, detail=lambda: read_text(self.log)[-3000:])
        return self

    @property
    def ca(self) -> Path:
        """The CA of pebble's own HTTPS certificate (acme.directory_ca)."""
        return self.dir / "https" / "ca.pem"

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root(self) -> Path:
        """pebble's issuing root (from its management interface), as a file."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management}/roots/0", context=ctx, timeout=10) as r:
            pem = r.read().decode()
        path = self.dir / "root.pem"
        path.write_text(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
        return path

    def orders(self) -> int:
        return read_text(self.log).count("Added order")

    def stop(self) -> None:
        stop_process(self.proc, grace=5)
        stop_process(self.challtest, grace=5)


# ---------------------------------------------------------------- the app


@dataclass
class App:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_app(dir: Path) -> App:
    log = dir / "echo_app.log"
    errf = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "echo_app.py")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    errf.close()
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)  # it prints PORT <n> once listening
    line = proc.stdout.readline() if ready else b""
    if not line.startswith(b"PORT "):
        proc.kill()
        raise AssertionError(f"echo app did not start: {line!r}\n{read_text(log)}")
    return App(port=int(line.split()[1]), proc=proc, log=log)


# ---------------------------------------------------------------- replicas


@dataclass
class Settings:
    shutdown_delay: str = SHUTDOWN_DELAY
    renew_before: str = ""
    proxy_protocol: bool = True


@dataclass
class Replica:
    name: str
    host: str
    https_port: int
    admin_port: int
    dir: Path
    starts: int = 0
    proc: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.dir / "tlsfront.toml"

    @property
    def log(self) -> Path:
        return self.dir / "tlsfront.log"

    def write_config(self, fleet: "Fleet") -> None:
        s = fleet.settings
        names = ", ".join(json.dumps(n) for n in NAMES)
        self.config.write_text(
            f"""# {self.name} of the fleet test (tests/fleet/conftest.py)
[listen]
https = "{self.host}:{self.https_port}"
proxy_protocol = {"true" if s.proxy_protocol else "false"}

[upstream]
url = "{fleet.app.url}"

[forwarded]
trusted_proxies = ["127.0.0.1/32"]
x_real_ip = true

[log]
access = "off"

[limits]
shutdown_delay = "{s.shutdown_delay}"
shutdown_timeout = "{SHUTDOWN_TIMEOUT}"

[admin]
listen = "{self.host}:{self.admin_port}"

[headers]
set_request = {{ "X-Fleet-Replica" = "{self.name}" }}

[acme]
names = [{names}]
email = "ops@example.com"
directory = "{fleet.pebble.directory}"
directory_ca = "{fleet.pebble.ca}"
challenges = ["tls-alpn-01"]
storage = "{fleet.storage}"
renew_before = "{s.renew_before}"
"""
        )

    def start(self, fleet: "Fleet", timeout: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.write_config(fleet)
        self.starts += 1
        with open(self.log, "ab") as logf:
            logf.write(f"\n==== start {self.starts} at {time.strftime('%H:%M:%S')} ====\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [str(tlsfront_bin()), "run", "-c", str(self.config)],
                cwd=str(self.dir),
                env={k: v for k, v in dict(os.environ, NO_COLOR="1").items() if k != "TLSFRONT_CONFIG"},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
            )
        mark = f"listening on https://{self.host}:{self.https_port}"
        wait_for(
            f"{self.name} to log '{mark}'",
            lambda: self.this_start_log().count(mark) or self.exited(),
            timeout,
            detail=lambda: self.this_start_log()[-3000:],
        )
        assert self.proc.poll() is None, f"{self.name} exited: {self.proc.returncode}\n{self.this_start_log()[-3000:]}"

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def this_start_log(self) -> str:
        text = read_text(self.log)
        return text[text.rfind(f"==== start {self.starts} at"):]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s\n{self.this_start_log()[-3000:]}"
            ) from e

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.host}:{self.admin_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metric(self, line_start: str) -> float:
        _, body = self.admin_get("/metrics")
        for line in body.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def leaf(self, name: str, root: Path) -> tuple[bytes, dict]:
        """The leaf this replica serves for `name` (DER, and as Python's ssl
        module decodes it), verified against pebble's root: straight to the
        replica, with the PROXY v2 header a balancer would send."""
        ctx = ssl.create_default_context(cafile=str(root))
        raw = socket.create_connection((self.host, self.https_port), timeout=5)
        try:
            raw.sendall(proxy_v2_header("127.0.0.9", 40000, self.host, self.https_port))
            with ctx.wrap_socket(raw, server_hostname=name) as tls:
                return tls.getpeercert(binary_form=True), tls.getpeercert()
        finally:
            raw.close()

    def stop(self) -> None:
        stop_process(self.proc, grace=15)


# ---------------------------------------------------------------- HAProxy


class HAProxy:
    def __init__(self, dir: Path, port: int, replicas: list[Replica]):
        self.dir = dir
        self.port = port
        self.replicas = replicas
        self.cfg = dir / "haproxy.cfg"
        self.sock = dir / "haproxy.sock"
        self.log = dir / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    def write_config(self, send_proxy: bool = True) -> None:
        proxy = " send-proxy-v2" if send_proxy else ""

        def servers(check: bool = True) -> str:
            return "".join(
                f"    server {r.name} {r.host}:{r.https_port}"
                + (f" check port {r.admin_port}" if check else "")
                + f"{proxy}\n"
                for r in self.replicas
            )

        self.cfg.write_text(
            f"""# The fleet test's balancer (tests/fleet/conftest.py)
global
    maxconn 4096
    stats socket {self.sock} mode 600 level admin
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    option dontlog-normal
    option log-health-checks
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    retries 3
    option redispatch

frontend https
    bind 127.0.0.1:{self.port}
    # ACME tls-alpn-01 validations (ALPN acme-tls/1) go to replicas that
    # are alive, ready or not: a replica is not ready before it has its
    # certificates, and it cannot get them if the CA cannot reach it.
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req.ssl_hello_type 1 }}
    use_backend acme if {{ req.ssl_alpn acme-tls/1 }}
    default_backend replicas

backend replicas
    option httpchk GET /readyz
    default-server inter {CHECK_INTER_MS}ms fall {CHECK_FALL} rise {CHECK_RISE}
{servers()}
backend acme
    # No health check: a replica that has just started would only be UP
    # after `rise` checks, and the first replica's validation comes sooner
    # than that (seen: 0.35 s after its start, with every server still
    # DOWN). `first`: the validation goes to the first replica listening
    # (any replica answers it, from the shared storage), not round-robin to
    # one that has not started yet; a refused connect (a replica gone) is
    # retried once on another server.
    balance first
    retries 1
{servers(check=False)}"""
        )

    def start(self) -> None:
        res = subprocess.run(["haproxy", "-c", "-f", str(self.cfg)], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"haproxy -c:\n{res.stdout}\n{res.stderr}"
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.cfg)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )
        wait_for("haproxy stats socket", lambda: self.sock.exists() and self._try_stat(), 10,
                 detail=lambda: read_text(self.log)[-3000:])

    def _try_stat(self) -> bool:
        try:
            self.command("show info")
            return True
        except OSError:
            return False

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def status(self, backend: str = "replicas") -> dict[str, str]:
        """Server name -> HAProxy's status (UP, DOWN, "UP 1/2", ...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        px, sv, st = header.index("pxname"), header.index("svname"), header.index("status")
        out = {}
        for line in lines[1:]:
            cols = line.split(",")
            if len(cols) > st and cols[px] == backend and cols[sv] not in ("FRONTEND", "BACKEND"):
                out[cols[sv]] = cols[st]
        return out

    def counters(self, backend: str = "replicas") -> dict[str, int]:
        """The backend's totals: connections retried (wretr), redispatched
        to another server (wredis), connect errors (econ), errors on the
        server side after connecting (eresp)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        px, sv = header.index("pxname"), header.index("svname")
        for line in lines[1:]:
            cols = line.split(",")
            if len(cols) > sv and cols[px] == backend and cols[sv] == "BACKEND":
                return {k: int(cols[header.index(k)] or 0) for k in ("wretr", "wredis", "econ", "eresp")}
        raise AssertionError(f"no backend {backend} in HAProxy's stats")

    def wait_status(self, name: str, want: str, timeout: float, backend: str = "replicas") -> float:
        """Waits until HAProxy says `want` for `name`; returns when (monotonic)."""
        wait_for(
            f"HAProxy to see {name} {want} in {backend}",
            lambda: self.status(backend).get(name) == want,
            timeout,
            interval=0.02,
            detail=lambda: f"{self.status(backend)}\n{read_text(self.log)[-2000:]}",
        )
        return time.monotonic()

    def stop(self) -> None:
        stop_process(self.proc, grace=5)


# ---------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    rundir: Path
    pebble: Pebble
    app: App
    storage: Path
    haproxy: HAProxy
    replicas: list[Replica] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    root: Path | None = None
    results: Results | None = None
    ready_after: float = 0.0  # seconds from the first start to all three UP

    def replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def client_context(self, alpn: list[str]) -> ssl.SSLContext:
        assert self.root is not None
        ctx = ssl.create_default_context(cafile=str(self.root))
        ctx.set_alpn_protocols(alpn)
        return ctx

    def all_up(self) -> bool:
        return all(v == "UP" for v in self.haproxy.status().values())

    def logs(self, limit: int = 3000) -> str:
        parts = [f"--- {r.name} ({r.log})\n{read_text(r.log)[-limit:]}" for r in self.replicas]
        parts.append(f"--- haproxy ({self.haproxy.log})\n{read_text(self.haproxy.log)[-limit:]}")
        return "\n".join(parts)

    def restart_replicas_quickly(self) -> None:
        """Every replica stopped (two signals: no shutdown_delay) and started
        again with the current settings, one at a time, no load measured."""
        for r in self.replicas:
            r.signal(signal.SIGTERM)
            time.sleep(0.05)
            if r.proc.poll() is None:
                r.signal(signal.SIGTERM)
            r.wait_exit(20)
            r.start(self)
            self.haproxy.wait_status(r.name, "UP", 20)
