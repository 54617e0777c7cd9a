"""End-to-end fixtures: the Flask demo app behind a real tlsfront process.

Layout of the moving parts (everything bound to 127.0.0.1):

    requests (verify=ca.pem) --https://localhost:<proxy_port>--> tlsfront
        --http://127.0.0.1:<app_port>--> docker/demo-app/app.py (Flask dev server)

Environment:
    TLSFRONT_BIN   path to the proxy binary (default <repo>/target/debug/tlsfront)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PATH = REPO_ROOT / "docker" / "demo-app" / "app.py"

DEMO_USER = "alice"
DEMO_PASSWORD = "wonderland"

APP_START_TIMEOUT = 15.0
PROXY_START_TIMEOUT = 20.0
CERT_TIMEOUT = 20.0
STOP_GRACE = 5.0

LISTEN_RE = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

# Log files of the processes started in this session, for the failure summary.
_LOGS: dict[str, Path] = {}


def tlsfront_bin() -> Path:
    return Path(os.environ.get("TLSFRONT_BIN", REPO_ROOT / "target" / "debug" / "tlsfront"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_log(path: Path, limit: int = 8000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-limit:]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, wait up to STOP_GRACE seconds, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_GRACE)
    except ProcessLookupError:
        pass


@dataclass
class DemoApp:
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Proxy:
    port: int
    proc: subprocess.Popen
    log: Path
    certdir: Path
    app: DemoApp

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca(self) -> Path:
        return self.certdir / "ca.pem"


@pytest.fixture(scope="session")
def demo_app(tmp_path_factory) -> DemoApp:
    workdir = tmp_path_factory.mktemp("demo-app")
    log = workdir / "app.log"
    _LOGS["demo app"] = log
    port = free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        DEMO_USER=DEMO_USER,
        DEMO_PASSWORD=DEMO_PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    env.pop("DEMO_COOKIE_SECURE", None)  # the point is that the *proxy* adds Secure
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, str(APP_PATH)],
            cwd=str(workdir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    app = DemoApp(port=port, proc=proc, log=log)
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"demo app exited early with code {proc.returncode}:\n{read_log(log)}",
                    pytrace=False,
                )
            try:
                r = requests.get(f"{app.base_url}/healthz", timeout=1)
                if r.status_code == 200 and r.text == "ok":
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"demo app did not answer /healthz within {APP_START_TIMEOUT}s:\n"
                    f"{read_log(log)}",
                    pytrace=False,
                )
            time.sleep(0.05)
        yield app
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def certdir(tmp_path_factory) -> Path:
    binary = tlsfront_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"tlsfront binary not found at {binary} (build it with `cargo build`, "
            f"or set TLSFRONT_BIN)",
            pytrace=False,
        )
    out = tmp_path_factory.mktemp("tlsfront")
    try:
        res = subprocess.run(
            [str(binary), "cert", "--out", str(out)],
            cwd=str(out),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CERT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tlsfront cert` did not finish within {CERT_TIMEOUT}s", pytrace=False)
    if res.returncode != 0:
        pytest.fail(
            f"`tlsfront cert --out {out}` failed ({res.returncode}):\n"
            f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}",
            pytrace=False,
        )
    missing = [n for n in ("ca.pem", "ca-key.pem", "cert.pem", "key.pem") if not (out / n).is_file()]
    if missing:
        pytest.fail(
            f"`tlsfront cert --out {out}` exited 0 but did not write {missing}\n"
            f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}",
            pytrace=False,
        )
    return out


@pytest.fixture(scope="session")
def proxy(demo_app: DemoApp, certdir: Path) -> Proxy:
    config = certdir / "tlsfront.toml"
    config.write_text("")  # an empty file is a valid config
    log = certdir / "tlsfront.log"
    _LOGS["tlsfront"] = log
    env = dict(os.environ, TLSFRONT_CONFIG=str(config), NO_COLOR="1")
    cmd = [
        str(tlsfront_bin()),
        "run",
        "--listen", "127.0.0.1:0",
        "--upstream", f"http://127.0.0.1:{demo_app.port}",
        "--cert", str(certdir / "cert.pem"),
        "--key", str(certdir / "key.pem"),
    ]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            cmd,
            cwd=str(certdir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + PROXY_START_TIMEOUT
        port = None
        while port is None:
            m = LISTEN_RE.search(ANSI_RE.sub("", read_log(log, limit=1 << 20)))
            if m:
                port = int(m.group(1))
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"tlsfront exited early with code {proc.returncode}\n"
                    f"cmd: {' '.join(cmd)}\n{read_log(log)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"tlsfront did not log 'listening on https://127.0.0.1:<port>' within "
                    f"{PROXY_START_TIMEOUT}s\ncmd: {' '.join(cmd)}\n{read_log(log)}",
                    pytrace=False,
                )
            time.sleep(0.05)
        yield Proxy(port=port, proc=proc, log=log, certdir=certdir, app=demo_app)
    finally:
        stop_process(proc)


@pytest.fixture
def client(proxy: Proxy) -> requests.Session:
    """A fresh cookie jar per test, trusting only the generated CA."""
    s = requests.Session()
    s.verify = str(proxy.ca)
    s.trust_env = False  # never route through an HTTP(S)_PROXY from the environment
    yield s
    s.close()


@pytest.fixture
def direct_client() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus == 0 or not _LOGS:
        return
    for name, path in _LOGS.items():
        terminalreporter.section(f"{name} log ({path})")
        terminalreporter.write_line(read_log(path))
