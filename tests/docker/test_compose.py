"""docker/compose.yaml end to end: tlsfront in front of the Flask demo app.

One compose project for the whole module (the `stack` fixture: `up --build
-d`, both healthchecks healthy); the tests run in the order written, each
leaving the stack serving for the next, until `stop`, the own-certificate
overlay and `down -v` at the end. Every request goes to the ports the
compose file publishes on 127.0.0.1.

From the HUP test on, tlsfront runs with a test overlay (written here): the
config is a copy of docker/tlsfront.toml that the test edits, and the
healthcheck runs every second instead of every ten (the image's own command,
`tlsfront health`, unchanged).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
import websocket  # websocket-client

from conftest import (
    DEMO_PASSWORD,
    DEMO_USER,
    DOCKER_DIR,
    OWN_CERT_FILE,
    PROJECT,
    Stack,
    docker,
    run,
    stack_resources,
    tlsfront_bin,
    wait_for,
)

CONTAINER_CONFIG = "/etc/tlsfront/tlsfront.toml"
UPSTREAM_DOWN_TEXT = "502 Bad Gateway: tlsfront could not connect to the app."


def ws_connect(stack: Stack, path: str, cookie: str | None = None) -> websocket.WebSocket:
    ws = websocket.create_connection(
        f"wss://127.0.0.1:{stack.https_port}{path}",
        timeout=10,
        sslopt={"ca_certs": str(stack.ca_path)},
        cookie=cookie,
        http_no_proxy=["*"],
    )
    assert ws.getstatus() == 101
    return ws


def tuned_overlay(stack: Stack) -> Path:
    """The test overlay: an editable config copy, a faster healthcheck."""
    return stack.workdir / "compose.test.yaml"


def write_overlay(stack: Stack, name: str, service_yaml: str) -> Path:
    path = stack.workdir / name
    path.write_text("services:\n  tlsfront:\n" + service_yaml)
    return path


def recreate_tlsfront(stack: Stack, overlay: Path | None) -> None:
    files = (overlay,) if overlay else ()
    stack.compose("up", "-d", "--no-build", "tlsfront", files=files, timeout=180)


def readyz(stack: Stack) -> subprocess.CompletedProcess:
    """The admin endpoint's /readyz, asked inside the container by the image's
    own health command (the admin port is not published)."""
    return docker("exec", stack.container("tlsfront"), "tlsfront", "health",
                  "--url", "http://127.0.0.1:9901/readyz", check=False)


# --------------------------------------------------------------- the demo


def test_both_healthy_and_published_on_loopback_only(stack: Stack):
    assert stack.health("app") == "healthy"
    assert stack.health("tlsfront") == "healthy"
    ports = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Ports}}",
                              stack.container("tlsfront")).stdout)
    published = {k: [(b["HostIp"], b["HostPort"]) for b in v or []] for k, v in ports.items()}
    assert published == {
        "8443/tcp": [("127.0.0.1", str(stack.https_port))],
        # HTTP/3: the same port over UDP.
        "8443/udp": [("127.0.0.1", str(stack.https_port))],
        "8080/tcp": [("127.0.0.1", str(stack.http_port))],
    }
    app_ports = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Ports}}",
                                  stack.container("app")).stdout)
    assert all(not v for v in app_ports.values()), f"the app publishes {app_ports}"


def test_login_with_the_ca_from_the_volume(stack: Stack):
    s = stack.session()
    # Without logging in, the protected page sends to the login form.
    first = s.get(stack.url("/"), allow_redirects=False, timeout=10)
    assert first.status_code == 302 and "/login" in first.headers["Location"]

    resp = s.post(stack.url("/login"), data={"username": DEMO_USER, "password": DEMO_PASSWORD},
                  allow_redirects=False, timeout=10)
    assert resp.status_code == 302, resp.text[:300]
    set_cookie = resp.headers["Set-Cookie"]
    attrs = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert set_cookie.startswith("session="), set_cookie
    assert {"secure", "httponly"} <= attrs, set_cookie

    page = s.get(stack.url("/"), timeout=10)
    assert page.status_code == 200 and DEMO_USER in page.text

    # A wrong password stays out.
    wrong = stack.session().post(stack.url("/login"), data={"username": DEMO_USER, "password": "x"},
                                 allow_redirects=False, timeout=10)
    assert wrong.status_code == 401


def test_app_sees_https_and_the_client_address(stack: Stack):
    s = stack.login()
    # A client-supplied X-Forwarded-For is not believed (no trusted proxies).
    who = s.get(stack.url("/whoami"), headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10).json()
    assert who["authenticated"] and who["user"] == DEMO_USER
    assert who["scheme"] == "https"
    # https_public_port = 0 in docker/tlsfront.toml: the app is told the
    # container's port, 8443, which compose publishes unless remapped (as
    # here; the `tuned` tests set the published port).
    assert who["url"] == "https://127.0.0.1:8443/whoami"
    # The client as tlsfront sees it: Docker's port publishing connects from
    # the compose network's gateway (the host side of the bridge).
    assert who["remote_addr"] == stack.network_gateway(), who
    assert who["headers"].get("X-Forwarded-Proto") == "https", who["headers"]


def test_plain_http_gets_308_to_https(stack: Stack):
    resp = stack.plain_get("/whoami?x=1")
    assert resp.status_code == 308
    # docker/tlsfront.toml keeps https_public_port = 0: the container's own
    # 8443, which is what compose publishes unless remapped (as here).
    assert resp.headers["Location"] == "https://127.0.0.1:8443/whoami?x=1"


def test_websocket_echo_and_login_over_wss(stack: Stack):
    ws = ws_connect(stack, "/ws")
    try:
        ws.send("ping through docker")
        assert ws.recv() == "ping through docker"
        ws.send("whoami")
        seen = json.loads(ws.recv())
        assert seen["scheme"] == "https" and seen["is_secure"] is True
    finally:
        ws.close()
    cookie = "session=" + stack.login().cookies["session"]
    private = ws_connect(stack, "/ws-private", cookie=cookie)
    try:
        assert private.recv() == f"hello {DEMO_USER}"
    finally:
        private.close()


def test_restart_keeps_the_development_ca(stack: Stack):
    before = stack.ca_path.read_bytes()
    started_before = stack.state("tlsfront")["StartedAt"]
    stack.compose("restart", "tlsfront", timeout=120)
    assert stack.state("tlsfront")["StartedAt"] != started_before
    # The CA trusted before the restart still verifies what is served.
    wait_for("tlsfront serving after restart",
             lambda: stack.session().get(stack.url("/login"), timeout=5).status_code == 200, timeout=60)
    assert stack.fetch_ca().read_bytes() == before


# ------------------------------------------- reload, faults, health, drain


@pytest.fixture(scope="module")
def tuned(stack: Stack) -> Path:
    """tlsfront recreated with the test overlay; yields the config copy."""
    config = stack.workdir / "tlsfront.toml"
    # Redirects name the published port (the knob docker/README.md describes).
    text = (DOCKER_DIR / "tlsfront.toml").read_text()
    assert "https_public_port = 0\n" in text
    config.write_text(text.replace("https_public_port = 0\n", f"https_public_port = {stack.https_port}\n"))
    write_overlay(stack, "compose.test.yaml", (
        f"    volumes:\n      - {config}:{CONTAINER_CONFIG}:ro\n"
        "    healthcheck:\n      interval: 1s\n      timeout: 5s\n      retries: 2\n"
    ))
    recreate_tlsfront(stack, tuned_overlay(stack))
    stack.wait_healthy(("tlsfront",), timeout=60)
    return config


def test_redirect_and_app_name_the_published_port_when_configured(stack: Stack, tuned: Path):
    resp = stack.plain_get("/login")
    assert resp.status_code == 308
    assert resp.headers["Location"] == f"https://127.0.0.1:{stack.https_port}/login"
    who = stack.session().get(stack.url("/whoami"), timeout=10).json()
    assert who["url"] == f"https://127.0.0.1:{stack.https_port}/whoami"


def test_sighup_reloads_the_changed_mounted_config(stack: Stack, tuned: Path):
    s = stack.session()
    assert "X-Reload-Marker" not in s.get(stack.url("/login"), timeout=10).headers
    started = stack.state("tlsfront")["StartedAt"]
    # Edited in place (same inode), so the single-file bind mount shows it.
    with tuned.open("a") as f:
        f.write('\n[headers]\nset_response = { "X-Reload-Marker" = "after-hup" }\n')
    time.sleep(2)
    assert "X-Reload-Marker" not in s.get(stack.url("/login"), timeout=10).headers, "reloaded without a signal"
    docker("kill", "-s", "HUP", stack.container("tlsfront"))
    wait_for("the reloaded header",
             lambda: s.get(stack.url("/login"), timeout=5).headers.get("X-Reload-Marker") == "after-hup",
             timeout=15)
    assert stack.state("tlsfront")["StartedAt"] == started, "the container restarted instead of reloading"
    assert stack.health("tlsfront") == "healthy"


def test_stopped_app_gives_502_and_readyz_503_then_recovers(stack: Stack, tuned: Path):
    assert readyz(stack).returncode == 0
    stack.compose("stop", "app", timeout=120)
    try:
        resp = stack.session().get(stack.url("/login"), timeout=15)
        assert resp.status_code == 502
        assert resp.text.strip() == UPSTREAM_DOWN_TEXT
        # /readyz probes the app (an answer within 10 s counts): wait that out.
        ready = wait_for("/readyz 503", lambda: (r := readyz(stack)).returncode != 0 and r, timeout=20)
        assert "503" in ready.stdout + ready.stderr and "app:8000" in ready.stdout + ready.stderr, ready
        # Liveness is not readiness: tlsfront itself stays healthy.
        assert stack.health("tlsfront") == "healthy"
    finally:
        stack.compose("start", "app", timeout=120)
    wait_for("the app back through tlsfront",
             lambda: stack.session().get(stack.url("/login"), timeout=5).status_code == 200, timeout=60)
    assert readyz(stack).returncode == 0
    stack.wait_healthy(("app",), timeout=60)


def test_healthcheck_unhealthy_when_tlsfront_cannot_serve(stack: Stack, tuned: Path):
    tf = stack.container("tlsfront")
    assert stack.health("tlsfront") == "healthy"
    # A hung tlsfront: the process is there but answers nothing.
    docker("kill", "-s", "STOP", tf)
    try:
        wait_for("tlsfront unhealthy", lambda: stack.health("tlsfront") == "unhealthy", timeout=40)
        with pytest.raises(requests.exceptions.RequestException):
            stack.session().get(stack.url("/login"), timeout=3)
    finally:
        docker("kill", "-s", "CONT", tf)
    wait_for("tlsfront healthy again", lambda: stack.health("tlsfront") == "healthy", timeout=40)
    assert stack.session().get(stack.url("/login"), timeout=10).status_code == 200


@pytest.mark.parametrize("fault", ["missing", "broken"])
def test_bad_config_exits_with_the_binarys_error_line(stack: Stack, tuned: Path, fault: str):
    if fault == "broken":
        # A typo in a key of the mounted file: the error names the line, the
        # key and the fix.
        host_file = stack.workdir / "broken.toml"
        host_file.write_text(tuned.read_text().replace("\nurl = ", "\nurll = ", 1))
        overlay = write_overlay(stack, "compose.broken.yaml",
                                f"    volumes:\n      - {host_file}:{CONTAINER_CONFIG}:ro\n")
        container_file = CONTAINER_CONFIG
    else:
        # The config path names a file that nothing was mounted at.
        container_file = "/etc/tlsfront/missing.toml"
        host_file = Path(container_file)
        assert not host_file.exists()
        overlay = write_overlay(stack, "compose.missing.yaml",
                                f"    environment:\n      TLSFRONT_CONFIG: {container_file}\n")
    try:
        recreate_tlsfront(stack, overlay)
        # Exit code 2, and Docker's restart policy (unless-stopped) restarting
        # it with a growing back-off; the window between the exit and the next
        # start is what the poll catches.
        state = wait_for("tlsfront exited 2, to be restarted",
                         lambda: (st := stack.state("tlsfront"))["Restarting"] and st["ExitCode"] == 2 and st,
                         timeout=30, interval=0.1)
        assert stack.restart_count("tlsfront") >= 1
        assert stack.health("tlsfront") != "healthy", state
        # The binary on the host, on the same file, prints the same line
        # (`check` reads the config as `run` does, without serving).
        host = run([str(tlsfront_bin()), "check", "-c", str(host_file)], check=False, timeout=30)
        assert host.returncode == 2
        expected = host.stderr.strip().replace(str(host_file), container_file)
        assert expected.count("\n") == 0 and expected.startswith("tlsfront: error: "), expected
        lines = [line for line in stack.logs("tlsfront").splitlines() if line.strip()]
        # That line once per start and nothing else: the restart loop is loud.
        assert len(lines) >= 2 and set(lines) == {expected}, lines
        print(f"\n{fault} config, docker logs: {lines[0]}")
    finally:
        recreate_tlsfront(stack, tuned_overlay(stack))
    stack.wait_healthy(("tlsfront",), timeout=60)


def test_missing_config_file_on_the_host_fails_loudly_at_up(stack: Stack, tuned: Path):
    """compose.yaml mounts ./tlsfront.toml; were it missing, Docker would
    create a directory there and refuse to mount it over the image's file:
    `up` fails with that message, no container is left restarting."""
    absent = stack.workdir / "absent" / "tlsfront.toml"
    overlay = write_overlay(stack, "compose.absent.yaml", f"    volumes:\n      - {absent}:{CONTAINER_CONFIG}:ro\n")
    try:
        up = stack.compose("up", "-d", "--no-build", "tlsfront", files=(overlay,), check=False, timeout=180)
        assert up.returncode != 0
        assert "mount a directory onto a file" in up.stderr, up.stderr[-2000:]
        # Compose keeps the old container aside (renamed) when a recreate
        # fails: neither it nor the new one runs or restarts.
        ids = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                     "--filter", "label=com.docker.compose.service=tlsfront").stdout.split()
        states = [json.loads(docker("inspect", "-f", "{{json .State}}", i).stdout) for i in ids]
        assert states and not any(st["Running"] or st["Restarting"] for st in states), states
    finally:
        recreate_tlsfront(stack, tuned_overlay(stack))
        shutil.rmtree(stack.workdir / "absent", ignore_errors=True)
    stack.wait_healthy(("tlsfront",), timeout=60)


def test_stop_drains_an_in_flight_request_and_tlsfront_exits_0(stack: Stack, tuned: Path):
    ctx = ssl.create_default_context(cafile=str(stack.ca_path))
    body = urlencode({"username": DEMO_USER, "password": DEMO_PASSWORD}).encode()
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", stack.https_port), timeout=30),
                          server_hostname="127.0.0.1")
    head = (
        f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{stack.https_port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    # The request is in flight: head and half the body sent, the rest later.
    tls.sendall(head + body[:5])
    time.sleep(1)
    shutdown_mark = "shutting down: no new connections"
    marks_before = stack.logs("tlsfront").count(shutdown_mark)
    stopping = threading.Thread(target=lambda: stack.compose("stop", timeout=120))
    stop_started = time.monotonic()
    stopping.start()
    try:
        # tlsfront got SIGTERM: it says so ...
        wait_for("tlsfront to log that it is shutting down",
                 lambda: stack.logs("tlsfront").count(shutdown_mark) > marks_before, timeout=20)

        # ... and a new connection is refused: refused or reset, or closed
        # before the handshake (Docker's port proxy accepts on the host side
        # and closes once the container's port refuses it). A timeout or any
        # other error is not a refusal: wait_for keeps it as the last error
        # and polls again, so a tlsfront that hangs instead fails here.
        def refused() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", stack.https_port), timeout=3) as raw, \
                        ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return False  # handshake done: still taking connections
            except (ConnectionError, ssl.SSLEOFError):  # refused, reset, closed
                return True

        wait_for("tlsfront refusing new connections", refused, timeout=20)
        tls.sendall(body[5:])
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
    finally:
        tls.close()
        stopping.join(timeout=120)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.split()[:2] == [b"HTTP/1.1", b"302"], response[:300]
    assert b"\r\nset-cookie: session=" in response.lower()
    state = stack.state("tlsfront")
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state
    print(f"\ncompose stop with a request in flight: {time.monotonic() - stop_started:.1f} s, tlsfront exit 0")


def test_own_cert_overlay_serves_the_given_certificate(stack: Stack, tuned: Path):
    certs = stack.workdir / "own-certs"
    certs.mkdir()
    certs.chmod(0o755)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem"), "-days", "2",
         "-subj", "/CN=tlsfront own-cert test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
    # The key stays 0600, readable by the image's user only (no TLSFRONT_USER).
    (certs / "key.pem").chmod(0o600)
    shutil.chown(certs / "key.pem", 10001, 10001)
    files = (OWN_CERT_FILE, tuned_overlay(stack))
    stack.compose("up", "-d", "--no-build", files=files, env={"TLSFRONT_CERTS": str(certs)}, timeout=180)
    stack.wait_healthy(timeout=90)
    served = ssl.get_server_certificate(("127.0.0.1", stack.https_port), timeout=10)
    given = (certs / "cert.pem").read_text()
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(given)
    assert stack.session(verify=certs / "cert.pem").get(stack.url("/login"), timeout=10).status_code == 200


def test_unix_socket_variant_reaches_gunicorn_over_the_socket(stack: Stack):
    """compose.unix-socket.yaml: the app's Gunicorn listens on a socket in a
    shared volume and tlsfront reaches it through a [[route]]."""
    files = (DOCKER_DIR / "compose.unix-socket.yaml",)
    stack.compose("up", "-d", "--no-build", files=files, timeout=180)
    stack.wait_healthy(timeout=120)
    s = stack.login()
    who = s.get(stack.url("/whoami"), timeout=10).json()
    assert who["authenticated"] and who["user"] == DEMO_USER
    assert who["scheme"] == "https"
    assert who["headers"].get("X-Forwarded-Proto") == "https", who["headers"]
    ready = readyz(stack)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "unix:/run/app/gunicorn.sock" in ready.stdout, ready.stdout
    # Nothing listens on the app's TCP port for other containers any more.
    # `tlsfront health` exits 3 for "nothing answered" (src/app.rs) and says
    # "cannot connect" when the name resolved but the connection was refused
    # (src/health.rs): the app container is there, its TCP port is not.
    probe = docker("exec", stack.container("tlsfront"), "tlsfront", "health",
                   "--url", "http://app:8000/healthz", check=False)
    assert probe.returncode == 3, (probe.returncode, probe.stdout, probe.stderr)
    assert "cannot connect" in probe.stderr, (probe.stdout, probe.stderr)


def test_down_v_leaves_nothing_behind(stack: Stack):
    assert stack_resources()["volumes"], "the certificate volume should exist before down -v"
    # With the Unix-socket overlay too: it adds the socket volume, which a
    # `down -v` that does not name the overlay would not know about.
    stack.compose("down", "-v", files=(DOCKER_DIR / "compose.unix-socket.yaml",), timeout=180)
    assert stack_resources() == {"containers": [], "networks": [], "volumes": []}
