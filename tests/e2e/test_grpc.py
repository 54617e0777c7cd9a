"""gRPC through tlsfront: a real grpcio client over TLS (trusting the
development CA) to tlsfront, which forwards over an h2c:// route to a real
grpcio server (tests/apps/grpc_app.py).

    grpc client --TLS, h2--> tlsfront --h2c (prior knowledge)--> grpc_app.py

What must survive the trip: the HTTP/2 upstream connection, `te: trailers`
(grpcio servers reject calls without it), `content-type: application/grpc`,
and the response trailers (`grpc-status`, `grpc-message`, custom trailing
metadata), including a "Trailers-Only" error response.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from conftest import ANSI_RE, LISTEN_RE, PROXY_START_TIMEOUT, REPO_ROOT, _LOGS, read_log, stop_process, tlsfront_bin

APP_PATH = REPO_ROOT / "tests" / "apps" / "grpc_app.py"
APP_LISTEN_RE = re.compile(r"listening on (\d+)")
CALL_TIMEOUT = 10.0


@dataclass
class GrpcSetup:
    proxy_port: int
    ca: Path
    proxy_log: Path


def wait_for(pattern: re.Pattern, log: Path, proc: subprocess.Popen, what: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        m = pattern.search(ANSI_RE.sub("", read_log(log, limit=1 << 20)))
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            pytest.fail(f"{what} exited early with code {proc.returncode}:\n{read_log(log)}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not start within {timeout}s:\n{read_log(log)}", pytrace=False)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def grpc_setup(certdir: Path, tmp_path_factory) -> GrpcSetup:
    work = tmp_path_factory.mktemp("grpc")
    app_log = work / "grpc_app.log"
    _LOGS["grpc app"] = app_log
    with open(app_log, "wb") as logf:
        app = subprocess.Popen(
            [sys.executable, str(APP_PATH)],
            cwd=str(work),
            env={"PORT": "0", "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    proxy = None
    try:
        app_port = wait_for(APP_LISTEN_RE, app_log, app, "the gRPC app", 20.0)
        config = work / "tlsfront.toml"
        config.write_text(f'[[route]]\nurl = "h2c://127.0.0.1:{app_port}"\n')
        proxy_log = work / "tlsfront.log"
        _LOGS["tlsfront (gRPC)"] = proxy_log
        cmd = [
            str(tlsfront_bin()),
            "run",
            "-c", str(config),
            "--listen", "127.0.0.1:0",
            "--cert", str(certdir / "cert.pem"),
            "--key", str(certdir / "key.pem"),
        ]
        with open(proxy_log, "wb") as logf:
            proxy = subprocess.Popen(
                cmd,
                cwd=str(work),
                env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        port = wait_for(LISTEN_RE, proxy_log, proxy, "tlsfront", PROXY_START_TIMEOUT)
        yield GrpcSetup(proxy_port=port, ca=certdir / "ca.pem", proxy_log=proxy_log)
    finally:
        if proxy is not None:
            stop_process(proxy)
        stop_process(app)


@pytest.fixture
def channel(grpc_setup: GrpcSetup):
    creds = grpc.ssl_channel_credentials(root_certificates=grpc_setup.ca.read_bytes())
    # No HTTP(S) proxy from the environment: the call must go to tlsfront.
    options = (("grpc.enable_http_proxy", 0),)
    with grpc.secure_channel(f"localhost:{grpc_setup.proxy_port}", creds, options=options) as ch:
        yield ch


def test_unary_call_gets_reply_status_and_trailers(channel, grpc_setup: GrpcSetup):
    call = channel.unary_unary("/demo.Echo/Unary")
    reply, info = call.with_call(b"hello", timeout=CALL_TIMEOUT)
    assert reply == b"echo:hello proto=https"
    assert info.code() == grpc.StatusCode.OK
    assert ("x-trailer", "unary-done") in tuple(info.trailing_metadata())
    # The access log shows the call went through tlsfront over HTTP/2. The
    # line is written when the response ends, which can be just after the
    # client has it: wait for it, bounded.
    deadline = time.monotonic() + 5.0
    while "POST /demo.Echo/Unary HTTP/2.0" not in (log := read_log(grpc_setup.proxy_log, limit=1 << 20)):
        assert time.monotonic() < deadline, log
        time.sleep(0.05)


def test_server_streaming_call_gets_every_message_then_trailers(channel):
    call = channel.unary_stream("/demo.Echo/ServerStream")
    responses = call(b"part", timeout=CALL_TIMEOUT)
    assert list(responses) == [b"part#1", b"part#2", b"part#3"]
    assert responses.code() == grpc.StatusCode.OK
    assert ("x-trailer", "stream-done") in tuple(responses.trailing_metadata())


def test_error_status_and_message_arrive(channel):
    call = channel.unary_unary("/demo.Echo/Fail")
    with pytest.raises(grpc.RpcError) as failure:
        call(b"x", timeout=CALL_TIMEOUT)
    err = failure.value
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
    assert err.details() == "not for you", err
    assert ("x-trailer", "failed") in tuple(err.trailing_metadata())
