"""HTTP/3 idle connections and limits.idle_timeout, with the aioquic client.

A QUIC connection is idle while no request is in flight: from the end of its
handshake until its first request, then from the end of each response. One
idle for `limits.idle_timeout` is closed by tlsfront (CONNECTION_CLOSE); one
whose first request comes a moment after the handshake is served, however
long tlsfront itself has been running (a regression: the first idle check
once counted from the process's start, closing every quiet new connection
once tlsfront had been up longer than idle_timeout).
"""

from __future__ import annotations

import time

import pytest

from conftest import DemoApp
from h3_support import Front, free_dual_port, front_config, make_certdir, start_front
from h3client import H3Client

IDLE = 2.0


@pytest.fixture(scope="module")
def idle_front(tmp_path_factory, demo_app: DemoApp) -> Front:
    certs = make_certdir(tmp_path_factory.mktemp("idlecerts"), ["localhost", "127.0.0.1"])
    port = free_dual_port()
    cfg = front_config(port, certs, upstream=demo_app.base_url, limits=f'idle_timeout = "{IDLE:g}s"\n')
    f = start_front(tmp_path_factory.mktemp("idle"), certs, cfg, port, name="tlsfront-h3-idle")
    yield f
    f.stop()


def test_quiet_new_connection_is_served_after_tlsfront_has_run_longer_than_idle_timeout(idle_front: Front):
    # tlsfront has now been up longer than idle_timeout.
    time.sleep(IDLE + 1.0)
    with H3Client.connect(idle_front.port, cafile=idle_front.ca, timeout=10.0) as c:
        # Quiet for a second (a browser's preconnect), then the first request.
        c.pump(1.0)
        assert c.terminated is None, f"closed before its first request: {c.terminated}"
        r = c.get("/healthz", timeout=10.0)
        assert r.status == 200, r


def test_connection_idle_for_idle_timeout_is_closed_and_busy_one_is_not(idle_front: Front):
    with H3Client.connect(idle_front.port, cafile=idle_front.ca, timeout=10.0) as c:
        # Requests spread over more than idle_timeout keep it open.
        deadline = time.monotonic() + IDLE * 1.5
        while time.monotonic() < deadline:
            assert c.get("/healthz", timeout=10.0).status == 200
            c.pump(IDLE / 4)
        assert c.terminated is None, f"closed while in use: {c.terminated}"
        # Then quiet: closed within idle_timeout plus the check interval.
        c.pump(IDLE + 2.0, until=lambda: c.terminated is not None)
        assert c.terminated is not None, "an idle HTTP/3 connection was not closed after idle_timeout"
