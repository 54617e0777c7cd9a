"""A deploy behind one route with three servers (issue 12, item 3).

    4 client threads --https--> tlsfront --http--> gunicorn #1, #2, #3
                                   (round_robin, GET /healthz every 200 ms)

A bounded load of idempotent GETs (4 concurrent keep-alive clients, at most
LOAD_SECONDS) runs while the three servers are restarted one by one, as a
deploy does: SIGTERM (Gunicorn finishes what it has accepted and exits), wait
for the exit, start the new process. Shown:

* zero failed requests, before, during and after each restart;
* the traffic is spread over all three servers (each answer names its server
  and process);
* while one server is down tlsfront takes it out (/readyz says so) and the
  other two take every request; once it is back it gets traffic again (from
  its new process);
* with every server down a request gets 502 at once (under 100 ms) with a
  body that says what happened, /readyz is 503 and lists the servers; both
  recover when the servers come back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests

from routes_support import AppProcess, Apps, TlsFront, free_port, start_tlsfront, wait_for

CLIENTS = 4
LOAD_SECONDS = 40.0  # upper bound; the test stops the load once the restarts are done
REQUEST_TIMEOUT = 10
EVENT_TIMEOUT = 15.0
FAST_502 = 0.100


@dataclass
class Load:
    """CLIENTS threads doing GET /server until stopped (or LOAD_SECONDS)."""

    tf: TlsFront
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (monotonic end time, server id, boot id) of every successful answer
    answers: list[tuple[float, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> "Load":
        deadline = time.monotonic() + LOAD_SECONDS
        for i in range(CLIENTS):
            t = threading.Thread(target=self._client, args=(i, deadline), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _client(self, i: int, deadline: float) -> None:
        with requests.Session() as s:
            s.verify = str(self.tf.ca)
            s.trust_env = False
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    r = s.get(f"{self.tf.base_url}/server", timeout=REQUEST_TIMEOUT)
                    if r.status_code == 200:
                        body = r.json()
                        with self.lock:
                            self.answers.append((time.monotonic(), body["server"], body["boot"]))
                        continue
                    failure = f"client {i}: {r.status_code} {r.text.strip()[:200]}"
                except (requests.RequestException, ValueError) as exc:
                    failure = f"client {i}: {type(exc).__name__}: {exc}"
                with self.lock:
                    self.failures.append(failure)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT + 5)
        assert not any(t.is_alive() for t in self.threads), "a load client did not stop"

    def since(self, t0: float) -> list[tuple[float, str, str]]:
        with self.lock:
            return [a for a in self.answers if a[0] >= t0]


def server_state(tf: TlsFront, url: str) -> dict:
    _, ready = tf.readyz()
    for route in ready["routes"]:
        for s in route["servers"]:
            if s["url"] == url:
                return s
    raise AssertionError(f"/readyz does not list {url}: {ready}")


@pytest.fixture
def apps(tmp_path):
    a = Apps(tmp=tmp_path)
    yield a
    a.stop_all()


def test_deploy_restarts_servers_one_by_one_without_failed_requests(apps, certdir, tmp_path):
    servers: list[AppProcess] = [
        apps.gunicorn(f"server-{i}", f"127.0.0.1:{port}", {"SERVER_ID": str(i), "APP_NAME": f"server-{i}"})
        for i, port in enumerate(_ports(3), start=1)
    ]
    urls = ", ".join(f'"{s.server_url}"' for s in servers)
    tf = start_tlsfront(
        tmp_path / "tlsfront",
        certdir,
        "[[route]]\n"
        f"servers = [{urls}]\n"
        'health_path = "/healthz"\n'
        'health_interval = "200ms"\n'
        'health_timeout = "1s"\n'
        "healthy_threshold = 1\n"
        "unhealthy_threshold = 1\n"
        'eject_time = "1s"\n',
    )
    try:
        load = Load(tf).start()
        try:
            t0 = time.monotonic()
            wait_for(
                "answers from all three servers",
                lambda: {a[1] for a in load.since(t0)} == {"1", "2", "3"},
                EVENT_TIMEOUT,
            )
            for server in servers:
                sid = server.env["SERVER_ID"]
                old_boot = server.boot_id
                server.stop()  # SIGTERM, wait for the exit
                down_at = time.monotonic()
                wait_for(
                    f"/readyz to take server {sid} out",
                    lambda: server_state(tf, server.server_url)["available"] is False,
                    EVENT_TIMEOUT,
                )
                # While it is down, the two others answer everything.
                wait_for(
                    f"20 answers while server {sid} is down",
                    lambda: len(load.since(down_at)) >= 20,
                    EVENT_TIMEOUT,
                )
                while_down = load.since(down_at)
                assert {a[1] for a in while_down} <= {"1", "2", "3"} - {sid}, (
                    f"server {sid} answered after its process exited: {while_down[:10]}"
                )
                server.start()
                up_at = time.monotonic()
                new_boot = server.boot_id
                assert new_boot != old_boot
                wait_for(
                    f"the restarted server {sid} ({new_boot}) to get traffic again",
                    lambda: any(a[2] == new_boot for a in load.since(up_at)),
                    EVENT_TIMEOUT,
                )
            t_end = time.monotonic()
            wait_for(
                "answers from all three restarted servers",
                lambda: {a[1] for a in load.since(t_end)} == {"1", "2", "3"},
                EVENT_TIMEOUT,
            )
        finally:
            load.finish()

        total = len(load.answers) + len(load.failures)
        per_server = Counter(a[1] for a in load.answers)
        print(f"deploy: {total} requests, {len(load.failures)} failed, per server {dict(per_server)}")
        assert load.failures == [], f"{len(load.failures)} of {total} requests failed: {load.failures[:10]}"
        assert total >= 200, f"too little load to mean anything: {total} requests"
        for sid in ("1", "2", "3"):
            # Round robin over three (two while one restarts): far above 10 %.
            assert per_server[sid] >= total * 0.10, f"server {sid} got too little traffic: {dict(per_server)}"

        # Every server down: 502 at once, with a body that says why.
        with requests.Session() as s:
            s.verify = str(tf.ca)
            s.trust_env = False
            assert s.get(f"{tf.base_url}/server", timeout=REQUEST_TIMEOUT).status_code == 200  # warm connection
            for server in servers:
                server.stop()
            # Right after the last one stopped: refused connects to each, or,
            # once the health checks noticed, no server tried at all.
            started = time.monotonic()
            r = s.get(f"{tf.base_url}/server", timeout=REQUEST_TIMEOUT)
            took = time.monotonic() - started
            assert r.status_code == 502, r.text
            assert took < FAST_502, f"502 took {took * 1000:.1f} ms"
            assert r.text.startswith("502 Bad Gateway: "), r.text

            wait_for("/readyz to say 503", lambda: tf.readyz()[0] == 503, EVENT_TIMEOUT)
            status, ready = tf.readyz()
            assert status == 503 and ready["ready"] is False, ready
            listed = {s["url"]: s for route in ready["routes"] for s in route["servers"]}
            assert set(listed) == {srv.server_url for srv in servers}, ready
            assert all(not s["available"] and not s["answering"] for s in listed.values()), ready

            # After they noticed: no server is even tried.
            started = time.monotonic()
            r = s.get(f"{tf.base_url}/server", timeout=REQUEST_TIMEOUT)
            took = time.monotonic() - started
            assert r.status_code == 502, r.text
            assert took < FAST_502, f"502 took {took * 1000:.1f} ms"
            assert r.text.strip() == "502 Bad Gateway: no healthy server is available for this site right now.", r.text

            # Back up: ready again, and answering.
            for server in servers:
                server.start()
            wait_for("/readyz to say 200 again", lambda: tf.readyz()[0] == 200, EVENT_TIMEOUT)
            r = s.get(f"{tf.base_url}/server", timeout=REQUEST_TIMEOUT)
            assert r.status_code == 200, r.text
    finally:
        tf.proc.terminate()
        tf.proc.wait(timeout=10)


def _ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)
