"""Fixtures of the Docker tests: the image and the compose demo, on a real engine.

docker/test.sh provides the engine and builds the image (`tlsfront:local`)
before pytest starts; these tests then check the image and run
docker/compose.yaml end to end with docker-compose (v1, Debian's package).

Everything the tests send to a container goes through a port that the compose
file publishes on 127.0.0.1 (free ports, chosen here and passed in through
TLSFRONT_HTTPS_PORT / TLSFRONT_HTTP_PORT); the only other contact is the
Docker engine itself (docker cp, docker kill, docker exec of the image's own
health command).

Environment:
    TLSFRONT_IMAGE  the image under test (default tlsfront:local)
    TLSFRONT_BIN    the host binary whose error lines the container must print
                    (default <repo>/target/debug/tlsfront)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
OWN_CERT_FILE = DOCKER_DIR / "compose.own-cert.yaml"
IMAGE = os.environ.get("TLSFRONT_IMAGE", "tlsfront:local")
# One fixed project name: the demo app's image (<project>_app) and its build
# cache are reused from run to run; docker/test.sh runs one test at a time.
PROJECT = "tlsfront-dockertest"

DEMO_USER = "alice"
DEMO_PASSWORD = "wonderland"


def run(args: list[str], *, timeout: float = 120, check: bool = True, env: dict | None = None,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Runs a command (docker, docker-compose), its output captured; a failure
    raises with the command's output in the message."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return run(["docker", *args], timeout=timeout, check=check)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate, timeout: float, interval: float = 0.5):
    """Polls predicate() until it returns something truthy; fails after timeout
    seconds with the last value or exception in the message."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported if it never succeeds
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Stack:
    """One compose project of docker/compose.yaml with its ports on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.https_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.https_port:
            self.http_port = free_port()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "TLSFRONT_HTTPS_PORT": f"127.0.0.1:{self.https_port}",
            "TLSFRONT_HTTP_PORT": f"127.0.0.1:{self.http_port}",
            "SECRET_KEY": os.urandom(16).hex(),
            # The classic builder, as the image under test was built.
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
        }
        for name in ("COMPOSE_FILE", "TLSFRONT_USER", "TLSFRONT_CERTS"):
            self.env.pop(name, None)
        self.ca_path = workdir / "ca.pem"

    # --- docker-compose ---------------------------------------------------

    def compose(self, *args: str, files: tuple[Path, ...] = (), env: dict | None = None,
                timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["docker-compose", "-f", str(COMPOSE_FILE)]
        for f in files:
            cmd += ["-f", str(f)]
        return run(cmd + list(args), timeout=timeout, check=check, env={**self.env, **(env or {})})

    def container(self, service: str) -> str:
        """The id of the service's container (running or not)."""
        out = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                     "--filter", f"label=com.docker.compose.service={service}").stdout.split()
        assert len(out) == 1, f"expected one {service} container, found {out}"
        return out[0]

    def state(self, service: str) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.container(service)).stdout)

    def restart_count(self, service: str) -> int:
        return int(docker("inspect", "-f", "{{.RestartCount}}", self.container(service)).stdout)

    def health(self, service: str) -> str:
        state = self.state(service)
        return (state.get("Health") or {}).get("Status") or state.get("Status", "")

    def wait_healthy(self, services: tuple[str, ...] = ("app", "tlsfront"), timeout: float = 90) -> float:
        started = time.monotonic()
        for service in services:
            wait_for(f"{service} healthy", lambda s=service: self.health(s) == "healthy",
                     timeout=max(1.0, timeout - (time.monotonic() - started)))
        return time.monotonic() - started

    def logs(self, service: str) -> str:
        proc = docker("logs", self.container(service), check=False)
        return proc.stdout + proc.stderr

    def network_gateway(self) -> str:
        info = json.loads(docker("network", "inspect", f"{PROJECT}_default").stdout)
        return info[0]["IPAM"]["Config"][0]["Gateway"]

    # --- HTTP through the published ports ---------------------------------

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.https_port}{path}"

    def fetch_ca(self) -> Path:
        """The development CA, copied out of the tlsfront-certs volume."""
        self.ca_path.unlink(missing_ok=True)
        docker("cp", f"{self.container('tlsfront')}:/etc/tlsfront/certs/ca.pem", str(self.ca_path))
        return self.ca_path

    def session(self, verify: Path | None = None) -> requests.Session:
        """Trusts the development CA (or `verify`) only: no REQUESTS_CA_BUNDLE
        or proxy from the environment."""
        s = requests.Session()
        s.trust_env = False
        s.verify = str(verify or self.ca_path)
        return s

    def plain_get(self, path: str) -> requests.Response:
        """GET on the published plain-HTTP port, redirects not followed."""
        with requests.Session() as s:
            s.trust_env = False
            return s.get(f"http://127.0.0.1:{self.http_port}{path}", allow_redirects=False, timeout=10)

    def login(self) -> requests.Session:
        s = self.session()
        resp = s.post(self.url("/login"), data={"username": DEMO_USER, "password": DEMO_PASSWORD},
                      allow_redirects=False, timeout=10)
        assert resp.status_code == 302, (resp.status_code, resp.text[:300])
        return s


def tlsfront_bin() -> Path:
    return Path(os.environ.get("TLSFRONT_BIN", REPO_ROOT / "target" / "debug" / "tlsfront"))


def stack_resources() -> dict[str, list[str]]:
    """Whatever the test project still has in the engine."""
    label = f"label=com.docker.compose.project={PROJECT}"
    return {
        "containers": docker("ps", "-a", "-q", "--filter", label).stdout.split(),
        "networks": docker("network", "ls", "-q", "--filter", label).stdout.split(),
        "volumes": docker("volume", "ls", "-q", "--filter", label).stdout.split(),
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory, request):
    """The compose demo, up and healthy: `docker-compose -f docker/compose.yaml
    up --build -d` with only the ports remapped. Taken down (`down -v`) at the
    end; its logs are printed when a test failed."""
    s = Stack(tmp_path_factory.mktemp("compose"))
    # A run that was killed may have left its project behind (with the
    # Unix-socket overlay named, so its socket volume goes too).
    s.compose("down", "-v", "--remove-orphans", files=(DOCKER_DIR / "compose.unix-socket.yaml",),
              timeout=120, check=False)
    started = time.monotonic()
    s.compose("up", "--build", "-d", timeout=600)
    s.up_seconds = time.monotonic() - started
    s.healthy_seconds = s.wait_healthy(timeout=120)
    print(f"\ncompose up --build -d: {s.up_seconds:.1f} s, then healthy after {s.healthy_seconds:.1f} s")
    s.fetch_ca()
    yield s
    if request.session.testsfailed:
        logs = s.compose("logs", "--no-color", "--tail", "60", check=False)
        print("\n--- docker-compose logs (last 60 lines per service)\n" + logs.stdout[-12000:])
    s.compose("down", "-v", "--remove-orphans", timeout=180, check=False)
