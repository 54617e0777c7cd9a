"""The fixture of the fleet test: one fleet for the whole module (see
harness.py for what it is made of), stopped by its finalizers; and the
session's numbers at the end of pytest's report.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import (  # noqa: E402
    REPLICA_HOSTS,
    WORK,
    Fleet,
    HAProxy,
    Pebble,
    Replica,
    Results,
    free_port,
    read_text,
    start_app,
    stop_process,
    tlsfront_bin,
    wait_for,
)


def _prune_old_runs(keep: int = 3) -> None:
    runs = sorted(p for p in WORK.glob("run-*") if p.is_dir())
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(request) -> Fleet:
    binary = tlsfront_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"tlsfront binary not found at {binary} (cargo build, or set TLSFRONT_BIN)", pytrace=False)
    for tool in ("haproxy", "pebble", "pebble-challtestsrv"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed (apt-get install haproxy pebble; scripts/test.sh does)",
                        pytrace=False)
    WORK.mkdir(exist_ok=True)
    _prune_old_runs(keep=2)
    rundir = WORK / time.strftime("run-%Y%m%d-%H%M%S")
    rundir.mkdir()
    results = Results(rundir)
    front_port = free_port()
    # The balancer's port is where pebble validates tls-alpn-01; http-01 is not used.
    pebble = Pebble(rundir / "pebble", http_port=free_port(), tls_port=front_port)
    (rundir / "pebble").mkdir()
    stack: list = []
    request.addfinalizer(lambda: [f() for f in reversed(stack)])
    pebble.start()
    stack.append(pebble.stop)
    app = start_app(rundir)
    stack.append(lambda: stop_process(app.proc, grace=5))
    replicas = [
        Replica(name=name, host=host, https_port=free_port(host), admin_port=free_port(host), dir=rundir / name)
        for name, host in REPLICA_HOSTS.items()
    ]
    for r in replicas:
        r.dir.mkdir()
    haproxy = HAProxy(rundir / "haproxy", front_port, replicas)
    haproxy.dir.mkdir()
    fleet = Fleet(rundir=rundir, pebble=pebble, app=app, storage=rundir / "acme", haproxy=haproxy,
                  replicas=replicas, results=results)
    fleet.root = pebble.root()
    haproxy.write_config()
    haproxy.start()
    stack.append(haproxy.stop)
    t0 = time.monotonic()
    for r in replicas:
        stack.append(r.stop)
        r.start(fleet)
    print(f"\nfleet: HAProxy on 127.0.0.1:{front_port}, logs in {rundir}")
    wait_for(
        "HAProxy to see the three replicas UP (ready: they have their certificates)",
        fleet.all_up,
        90,
        interval=0.2,
        detail=lambda: f"{haproxy.status()}\n{fleet.logs()}\n--- pebble\n{read_text(pebble.log)[-3000:]}",
    )
    fleet.ready_after = time.monotonic() - t0
    return fleet


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The numbers of this session, one line per part (all in results.json)."""
    results = harness.RESULTS
    if results is None:
        return
    terminalreporter.section(f"fleet results ({results.rundir / 'results.json'})")
    for key, value in results.data.items():
        if isinstance(value, dict) and "total" in value:
            value = value["total"]
        elif isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("failures_first", "runs", "load")}
        terminalreporter.write_line(f"{key}: {json.dumps(value)}")
