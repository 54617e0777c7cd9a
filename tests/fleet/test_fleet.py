"""Three tlsfront replicas behind HAProxy (mode tcp, PROXY v2, /readyz
checks), one shared ACME storage and one pebble: the fleet as it runs in
production, on this machine (harness.py draws it, conftest.py starts it).

In file order, on one fleet:

1. each name ordered once across the three, the same certificate served
   by all three;
2. the app sees the client's own address (from HAProxy's PROXY header) on
   every replica, and a forged X-Forwarded-For never gets through;
3. rolling restarts (SIGTERM one replica, wait for its exit, start it
   again, wait until HAProxy sees it UP and it takes traffic; then the
   next) under continuous load: new TLS connections as fast as they go,
   HTTP/1.1 keep-alive and HTTP/2, FLEET_ROLLING_RUNS times (20) with
   shutdown_delay = "1s": zero failed requests in every run;
4. one replica killed (SIGKILL): only requests in flight on it fail, none
   once HAProxy's check took it out; started again it takes traffic;
5. a renewal: ordered once by one replica, served by all three within the
   renewal check, under load, with no failed request;
6. shutdown_delay = "0s": FLEET_ZERO_RUNS rolling restarts (3) measured
   and reported (printed and in .work/results.json), not asserted: that is
   the configuration that drops connections behind a balancer.
"""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections import Counter

from harness import CHECK_FALL, CHECK_INTER_MS, NAMES, SHUTDOWN_DELAY, Fleet, read_text, wait_for
from load import Failure, Load, check_body, connect, read_http1, request_bytes

ROLLING_RUNS = int(os.environ.get("FLEET_ROLLING_RUNS", "20"))
ZERO_RUNS = int(os.environ.get("FLEET_ZERO_RUNS", "3"))
UP_TIMEOUT = 30.0
LOAD_MAX_SECONDS = 90.0  # one rolling restart under load, at most
# What HAProxy needs to take a replica out: one check interval per fall,
# plus one interval for the check in flight, plus scheduling slack.
CHECK_WINDOW = (CHECK_INTER_MS * (CHECK_FALL + 1)) / 1000 + 0.3


def _fmt_failures(failures: list[Failure], t0: float, limit: int = 15) -> str:
    return "\n".join(
        f"  {f.started - t0:+8.3f}s ({f.ended - f.started:.3f}s) {f.client}: {f.kind}: {f.detail[:200]}"
        for f in failures[:limit]
    )


def start_load(fleet: Fleet, max_seconds: float = LOAD_MAX_SECONDS) -> Load:
    return Load(
        port=fleet.haproxy.port,
        ctx=fleet.client_context(["http/1.1"]),
        ctx_h2=fleet.client_context(["h2"]),
        sni=NAMES[0],
        new=4,
        keepalive=2,
        h2=2,
        max_seconds=max_seconds,
    ).start()


def wait_all_serving(fleet: Fleet, load: Load, since: float, what: str) -> None:
    wait_for(
        f"{what}: answers from all three replicas",
        lambda: len(load.replicas_since(since)) == 3 and not _load_died(load),
        20,
        detail=lambda: f"{load.summary()}\n{fleet.haproxy.status()}\n{fleet.logs(1500)}",
    )


def _load_died(load: Load) -> bool:
    return not any(t.is_alive() for t in load.threads)


def rolling_restart(fleet: Fleet, load: Load) -> list[dict]:
    """SIGTERM each replica in turn, start it again, wait until HAProxy sees
    it UP and it answers load again. Returns each step's timings."""
    steps = []
    delay = float(fleet.settings.shutdown_delay.rstrip("s"))
    for r in fleet.replicas:
        t_sig = time.monotonic()
        r.signal(signal.SIGTERM)
        t_down = fleet.haproxy.wait_status(r.name, "DOWN", 10)
        code = r.wait_exit(delay + 15)
        t_exit = time.monotonic()
        assert code == 0, f"{r.name} exited {code}\n{r.this_start_log()[-3000:]}"
        log = r.this_start_log()
        assert "drained: every connection closed" in log, f"{r.name} did not drain:\n{log[-3000:]}"
        r.start(fleet)
        t_started = time.monotonic()
        t_up = fleet.haproxy.wait_status(r.name, "UP", UP_TIMEOUT)
        wait_for(
            f"{r.name} to take traffic again",
            lambda: load.replicas_since(t_up).get(r.name, 0) > 0,
            15,
            detail=lambda: f"{load.summary()}\n{fleet.haproxy.status()}",
        )
        steps.append(
            {
                "replica": r.name,
                "haproxy_down_after": round(t_down - t_sig, 3),
                "exited_after": round(t_exit - t_sig, 3),
                "restart_took": round(t_started - t_exit, 3),
                "haproxy_up_after_start": round(t_up - t_started, 3),
            }
        )
    return steps


def measured_rolling_restarts(fleet: Fleet, runs: int, label: str) -> list[dict]:
    out = []
    for i in range(1, runs + 1):
        assert fleet.all_up(), f"before run {i}: {fleet.haproxy.status()}"
        before = fleet.haproxy.counters()
        load = start_load(fleet)
        try:
            t0 = time.monotonic()
            wait_all_serving(fleet, load, t0, f"{label} run {i}")
            steps = rolling_restart(fleet, load)
            time.sleep(0.5)  # load after the last restart, too
        finally:
            load.stop()
        after = fleet.haproxy.counters()
        summary = load.summary()
        summary["run"] = i
        summary["steps"] = steps
        # Connections HAProxy sent to a replica that no longer accepted
        # (retried, redispatched), and server-side errors it saw.
        summary["haproxy"] = {k: after[k] - before[k] for k in after}
        failures = load.all_failures()
        print(
            f"{label} run {i}/{runs}: {summary['requests_ok']} ok, {summary['requests_failed']} failed "
            f"{summary['failures_by_kind']} in {summary['seconds']} s; by client {summary['ok_by_client_kind']}; "
            f"events {summary['events']}; HAProxy {summary['haproxy']}",
            flush=True,
        )
        if failures:
            print(_fmt_failures(failures, load.started), flush=True)
        out.append(summary)
    return out


def totals(runs: list[dict]) -> dict:
    kinds: Counter = Counter()
    by_client: Counter = Counter()
    failed_by_client: Counter = Counter()
    haproxy: Counter = Counter()
    for r in runs:
        kinds.update(r["failures_by_kind"])
        by_client.update(r["ok_by_client_kind"])
        failed_by_client.update(r["failed_by_client_kind"])
        haproxy.update(r["haproxy"])
    return {
        "runs": len(runs),
        "requests_ok": sum(r["requests_ok"] for r in runs),
        "requests_failed": sum(r["requests_failed"] for r in runs),
        "failed_per_run": [r["requests_failed"] for r in runs],
        "failures_by_kind": dict(kinds),
        "failed_by_client_kind": dict(failed_by_client),
        "runs_with_failures": sum(1 for r in runs if r["requests_failed"]),
        "ok_by_client_kind": dict(by_client),
        "haproxy": dict(haproxy),
        "seconds": round(sum(r["seconds"] for r in runs), 1),
    }


# ---------------------------------------------------------------------------


def test_each_name_is_ordered_once_and_all_three_serve_the_same_certificate(fleet: Fleet):
    # The fixture waited until HAProxy saw all three UP: ready, so each has
    # both certificates.
    time.sleep(2)  # an extra order would have started by now
    assert fleet.pebble.orders() == len(NAMES), (
        f"one order per name expected, pebble saw {fleet.pebble.orders()}\n{fleet.logs()}"
    )
    served = {}
    for name in NAMES:
        leaves = {r.name: r.leaf(name, fleet.root) for r in fleet.replicas}
        ders = {der for der, _ in leaves.values()}
        assert len(ders) == 1, f"{name}: the replicas serve different certificates: " + str(
            {k: v[1]["serialNumber"] for k, v in leaves.items()}
        )
        _, decoded = next(iter(leaves.values()))
        sans = [v for k, v in decoded["subjectAltName"] if k == "DNS"]
        assert sans == [name], sans
        served[name] = decoded["serialNumber"]
    orders = {r.name: r.metric('tlsfront_acme_orders_total{result="success"}') for r in fleet.replicas}
    failed = {r.name: r.metric('tlsfront_acme_orders_total{result="failure"}') for r in fleet.replicas}
    assert sum(orders.values()) == len(NAMES), orders
    assert sum(failed.values()) == 0, failed
    assert not list((fleet.storage / "locks").glob("*.lock")), "locks are released"
    fleet.results.put(
        "acme",
        {"names": NAMES, "pebble_orders": fleet.pebble.orders(), "orders_by_replica": orders,
         "serials": served, "all_ready_after_s": round(fleet.ready_after, 1)},
    )


def test_the_app_sees_the_client_address_from_the_proxy_header_on_every_replica(fleet: Fleet):
    assert fleet.all_up(), fleet.haproxy.status()
    source = "127.0.0.9"
    seen: Counter = Counter()
    ctx = fleet.client_context(["http/1.1"])
    for _ in range(60):
        sock = connect(fleet.haproxy.port, source, ctx, NAMES[0])
        try:
            sock.sendall(request_bytes(NAMES[0], close=True))  # with a forged X-Forwarded-For
            status, _, body = read_http1(sock)
        finally:
            sock.close()
        assert status == 200, body
        seen[check_body(body, source)] += 1  # asserts X-Forwarded-For and X-Real-IP are 127.0.0.9
        if len(seen) == 3 and min(seen.values()) >= 3:
            break
    assert set(seen) == {"r1", "r2", "r3"}, f"not every replica answered: {seen}"
    # HTTP/2 as well, from another address.
    load = start_load(fleet, max_seconds=10)
    try:
        wait_all_serving(fleet, load, load.started, "HTTP/1.1 and HTTP/2 load")
        wait_for("h2 answers", lambda: any(c.startswith("h2@") for c in load.clients_since(load.started)), 10)
    finally:
        load.stop()
    assert not load.all_failures(), _fmt_failures(load.all_failures(), load.started)
    fleet.results.put("client_address", {"h1_by_replica": dict(seen), "load": load.summary()})


def test_rolling_restarts_with_shutdown_delay_fail_no_request(fleet: Fleet):
    assert fleet.settings.shutdown_delay == SHUTDOWN_DELAY
    t0 = time.monotonic()
    runs = measured_rolling_restarts(fleet, ROLLING_RUNS, f"shutdown_delay={SHUTDOWN_DELAY}")
    total = totals(runs)
    total["wall_seconds"] = round(time.monotonic() - t0, 1)
    fleet.results.put(f"rolling_shutdown_delay_{SHUTDOWN_DELAY}", {"total": total, "runs": runs})
    print(f"shutdown_delay={SHUTDOWN_DELAY}: {total}")
    for r in runs:
        kinds = r["ok_by_client_kind"]
        assert kinds.get("new", 0) >= 50 and kinds.get("keepalive", 0) >= 50 and kinds.get("h2", 0) >= 50, (
            f"run {r['run']}: too little load to show anything: {kinds}"
        )
    # Each kind of client on its own, so that the message says which.
    for client in ("new", "h2", "keepalive"):
        bad = [r for r in runs if r["failed_by_client_kind"].get(client)]
        assert not bad, (
            f"{client} clients: failed requests in {len(bad)} of {len(runs)} rolling restarts with "
            f"shutdown_delay = {SHUTDOWN_DELAY} ({sum(r['failed_by_client_kind'][client] for r in bad)} in all):\n"
            + "\n".join(
                f"run {r['run']}: "
                + "; ".join(
                    f"{f['client']} {f['kind']} at {f['utc']} UTC ({f['detail'][:120]})"
                    for f in r["failures_first"]
                    if f["client"].startswith(client + "@")
                )
                for r in bad
            )
            + (
                "\n(a request sent on a kept-alive connection that the replica closed as idle when its "
                "drain began, after shutdown_delay: see docs/fleet.md, Measured)"
                if client == "keepalive"
                else ""
            )
        )


def test_a_killed_replica_fails_only_its_requests_in_flight_and_comes_back(fleet: Fleet):
    assert fleet.all_up(), fleet.haproxy.status()
    victim = fleet.replica("r2")
    load = start_load(fleet)
    try:
        wait_all_serving(fleet, load, load.started, "before the kill")
        time.sleep(0.5)
        t_kill = time.monotonic()
        victim.proc.kill()
        victim.wait_exit(5)
        t_down = fleet.haproxy.wait_status(victim.name, "DOWN", 5)
        time.sleep(2)  # load on the two others
        t_restart = time.monotonic()
        victim.start(fleet)
        t_up = fleet.haproxy.wait_status(victim.name, "UP", UP_TIMEOUT)
        wait_for(
            "the restarted replica to take traffic",
            lambda: load.replicas_since(t_up).get(victim.name, 0) >= 10,
            15,
            detail=lambda: str(load.summary()),
        )
        time.sleep(0.5)
    finally:
        load.stop()
    failures = load.all_failures()
    summary = load.summary()
    summary.update(
        {
            "haproxy_down_after_kill": round(t_down - t_kill, 3),
            "haproxy_up_after_restart": round(t_up - t_restart, 3),
            "failures_at": [round(f.started - t_kill, 3) for f in failures],
        }
    )
    fleet.results.put("sigkill", summary)
    print(f"SIGKILL: {summary}")
    detail = _fmt_failures(failures, t_kill) + "\n" + fleet.logs(1500)
    assert t_down - t_kill <= CHECK_WINDOW, f"HAProxy took {t_down - t_kill:.3f}s to take it out"
    before = [f for f in failures if f.started < t_kill - 0.5]
    assert not before, "failures before the kill:\n" + detail
    # In flight on the killed replica only. A new connection HAProxy sent
    # there before its check took it out was refused and redispatched
    # (retries 3, option redispatch): no failure. (20 ms: the kill is sent
    # just after t_kill is taken.)
    new_after = [
        f
        for f in failures
        if (f.client.startswith("new@") or f.kind in ("connect", "handshake")) and f.started > t_kill + 0.02
    ]
    assert not new_after, "requests on new connections begun after the kill failed:\n" + detail
    # A kept-alive or HTTP/2 connection that was on it fails its next
    # request (begun before the client saw the reset), none later.
    late = [f for f in failures if f.started > t_down]
    assert not late, f"failures once HAProxy saw it DOWN ({t_down - t_kill:.3f}s after the kill):\n" + detail
    # Not "one failure per client": a client whose stream died with the
    # replica reconnects at once, and its new connection can reach the dying
    # process in the same few milliseconds (accepted by the kernel, then
    # reset when the process's sockets close), before HAProxy can retry it:
    # seen in a CI rehearsal (an HTTP/2 client, its stream at -3 ms and its
    # reconnect's handshake at +9 ms). What the issue asks is above: nothing
    # failed that began later than that, or after HAProxy took it out.


def test_a_renewal_by_one_replica_is_served_by_all_three(fleet: Fleet):
    assert fleet.all_up(), fleet.haproxy.status()
    old = {name: fleet.replicas[0].leaf(name, fleet.root) for name in NAMES}
    orders_before = fleet.pebble.orders()
    not_after = min(ssl.cert_time_to_seconds(d["notAfter"]) for _, d in old.values())
    # Due 5 s ago: renew_before a little longer than what is left. The new
    # certificates are then due again only as long after their issuance
    # as the old ones had been served (minutes): one renewal per name.
    lead = int(not_after - time.time()) + 5
    fleet.settings.renew_before = f"{lead}s"
    logs_before = {r.name: len(read_text(r.log)) for r in fleet.replicas}
    load = start_load(fleet)
    try:
        wait_all_serving(fleet, load, load.started, "before the renewal")
        for r in fleet.replicas:
            r.write_config(fleet)
        t_hup = time.monotonic()
        for r in fleet.replicas:
            r.signal(signal.SIGHUP)
        served_at: dict[tuple[str, str], float] = {}

        def everywhere() -> bool:
            for r in fleet.replicas:
                for name in NAMES:
                    if (r.name, name) not in served_at and r.leaf(name, fleet.root)[0] != old[name][0]:
                        served_at[(r.name, name)] = time.monotonic()
            return len(served_at) == len(NAMES) * len(fleet.replicas)

        wait_for("the renewed certificates on every replica", everywhere, 60, interval=0.1,
                 detail=lambda: f"{served_at}\n{fleet.logs()}")
        time.sleep(1)
    finally:
        load.stop()
        fleet.settings.renew_before = ""
        for r in fleet.replicas:
            r.write_config(fleet)  # later restarts: the default again
    new_logs = {r.name: read_text(r.log)[logs_before[r.name]:] for r in fleet.replicas}
    renewers = {
        name: [r for r, text in new_logs.items() if f"{name}: renewing a certificate" in text] for name in NAMES
    }
    assert all(len(v) == 1 for v in renewers.values()), f"one renewal per name: {renewers}\n{fleet.logs()}"
    assert fleet.pebble.orders() == orders_before + len(NAMES), fleet.pebble.orders()
    # The others serve it within the renewal check: the renewer's order
    # time, then one reload poll (1 s) and its settle time (0.3 s).
    lag = {}
    for name in NAMES:
        first = min(t for (r, n), t in served_at.items() if n == name)
        lag[name] = {r: round(served_at[(r, name)] - first, 3) for r in [x.name for x in fleet.replicas]}
        assert max(lag[name].values()) <= 3.0, f"{name}: served by the others only after {lag[name]}"
    failures = load.all_failures()
    summary = load.summary()
    fleet.results.put(
        "renewal",
        {"renewed_by": renewers, "served_after_hup_s": {f"{r}/{n}": round(t - t_hup, 3) for (r, n), t in served_at.items()},
         "lag_behind_first_replica_s": lag, "load": summary},
    )
    print(f"renewal: by {renewers}, lag {lag}, load {summary['requests_ok']} ok {summary['failures_by_kind']}")
    assert not failures, _fmt_failures(failures, load.started)


def test_rolling_restarts_without_shutdown_delay_are_measured(fleet: Fleet):
    """Not an assertion on failures: with 0s a replica stops accepting at
    once, before HAProxy's next check; what that costs is reported."""
    fleet.settings.shutdown_delay = "0s"
    try:
        fleet.restart_replicas_quickly()  # every replica now runs with 0s
        t0 = time.monotonic()
        runs = measured_rolling_restarts(fleet, ZERO_RUNS, "shutdown_delay=0s")
    finally:
        fleet.settings.shutdown_delay = SHUTDOWN_DELAY
    total = totals(runs)
    total["wall_seconds"] = round(time.monotonic() - t0, 1)
    fleet.results.put("rolling_shutdown_delay_0s", {"total": total, "runs": runs})
    print(f"shutdown_delay=0s (reported, not asserted): {total}")
    for r in runs:
        assert r["ok_by_client_kind"].get("new", 0) >= 50, f"run {r['run']}: too little load: {r}"
