"""Part 2: idle keep-alive connections and memory.

Opens IDLE_N (10,000) TLS keep-alive connections at IDLE_RATE (200/s); each
does one GET and then idles. tlsfront runs with max_connections = 12000 (and
idle/header-read timeouts long enough to hold them). Reports tlsfront's RSS
before, while holding (KiB per connection) and after closing them all;
checks that all are held (open_connections metric, a second GET on a sample
of them), that they are parked (tlsfront_parked_connections >= IDLE_N while
held: idle HTTP/1.1 connections give hyper's buffers back after 500 ms, see
src/park.rs; the memory bound alone would pass without parking) and that a
new client is still served meanwhile.

Then three more rounds of IDLE_N / 5: RSS must level off (a leak would grow
by about the per-connection footprint every round).

Also observes (without deciding PASS/FAIL) how long an idle keep-alive
connection lives: for HTTP/1.1 hyper's `header_read_timeout` also starts
while a kept-alive connection waits for its next request, so the effective
keep-alive is the smaller of `idle_timeout` and `header_read_timeout` (as
docs/operations.md says).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Result, Tlsfront, Upstream, client_context, close_writer, https_get, log, open_tls, raise_fd_limit,
    read_response, request_bytes, wait_until,
)


async def open_idle(port: int, ctx, conns: list, failures: list) -> None:
    try:
        reader, writer = await open_tls(port, ctx, 30)
        writer.write(request_bytes("GET", "/"))
        resp = await asyncio.wait_for(read_response(reader), 30)
        if resp.status != 200 or not resp.complete:
            failures.append(f"status {resp.status} {resp.error}")
            await close_writer(writer, abort=True)
            return
        conns.append((reader, writer))
    except Exception as e:  # noqa: BLE001
        failures.append(f"{type(e).__name__}: {e}")


async def hold_many(tf: Tlsfront, n: int, rate: float, res: Result) -> dict:
    ctx = client_context(["http/1.1"])
    conns: list = []
    failures: list = []
    tasks = []
    t0 = time.monotonic()
    last_report = t0
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(open_idle(tf.port, ctx, conns, failures)))
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            log(f"  ... {i + 1} started, {len(conns)} held, {len(failures)} failed, "
                f"tlsfront RSS {tf.rss_kib() / 1024:.1f} MiB")
    await asyncio.gather(*tasks)
    open_secs = time.monotonic() - t0
    await asyncio.sleep(3)  # let tlsfront settle
    out = {"held": len(conns), "failures": failures, "open_secs": open_secs}
    out["metric_open"] = tf.metric("tlsfront_open_connections")
    out["metric_parked"] = tf.metric("tlsfront_parked_connections")
    out["rss_held"] = tf.rss_kib()
    out["fds_held"] = tf.fd_count()
    # A new client is still served while they are held.
    t = time.monotonic()
    try:
        r = await https_get(tf.port, ctx, "/", timeout=10)
        out["new_client"] = (r.status, r.complete, (time.monotonic() - t) * 1000)
    except Exception as e:  # noqa: BLE001
        out["new_client"] = (f"{type(e).__name__}: {e}", False, (time.monotonic() - t) * 1000)
    # The held connections are really alive: the server closed none of them,
    # and a sample still answers a second request on the same connection.
    out["eof"] = sum(1 for r, _ in conns if r.at_eof())
    sample = conns[:: max(1, len(conns) // 100)]
    ok = 0
    for reader, writer in sample:
        try:
            writer.write(request_bytes("GET", "/"))
            r = await asyncio.wait_for(read_response(reader), 10)
            ok += r.status == 200 and r.complete
        except Exception:  # noqa: BLE001
            pass
    out["sample"] = (ok, len(sample))
    # Close them all.
    for _, writer in conns:
        writer.transport.abort()
    conns.clear()
    return out


async def keepalive_lifetime(tf: Tlsfront, n: int = 3) -> list[float]:
    ctx = client_context(["http/1.1"])

    async def one() -> float:
        reader, writer = await open_tls(tf.port, ctx)
        writer.write(request_bytes("GET", "/"))
        await read_response(reader)
        t = time.monotonic()
        try:
            await asyncio.wait_for(reader.read(100), 30)
        except Exception:  # noqa: BLE001
            pass
        await close_writer(writer, abort=True)
        return time.monotonic() - t

    return list(await asyncio.gather(*[one() for _ in range(n)]))


def run() -> Result:
    n = int(os.environ.get("IDLE_N", "10000"))
    rate = float(os.environ.get("IDLE_RATE", "200"))
    res = Result("idle")
    fd_limit = raise_fd_limit()
    if fd_limit < n + 200:
        res.note(f"client open-files limit {fd_limit} < {n + 200}")
    up = Upstream("ok", name="idle-upstream").start()
    tf = Tlsfront("idle", up.url, {"limits": {
        "max_connections": 12000,
        "idle_timeout": "10m",
        # hyper's header_read_timeout also runs while a kept-alive connection
        # waits for its next request: it must be long too to hold them.
        "header_read_timeout": "10m",
    }, "upstream": {"pool_idle_timeout": "2s"}}).start()
    try:
        # Warm up (first connection, upstream pool), then the baseline.
        asyncio.run(https_get(tf.port, client_context(), "/"))
        time.sleep(3)
        rss0, fds0 = tf.rss_kib(), tf.fd_count()
        log(f"idle: opening {n} idle TLS keep-alive connections at {rate:g}/s; tlsfront RSS before "
            f"{rss0 / 1024:.1f} MiB, {fds0} fds")
        out = asyncio.run(hold_many(tf, n, rate, res))
        held = out["held"]
        per_conn = (out["rss_held"] - rss0) / held if held else float("nan")
        nc_status, nc_complete, nc_ms = out["new_client"]
        log(f"  held {held}/{n} (opened in {out['open_secs']:.1f} s, {len(out['failures'])} failures), "
            f"open_connections metric {out['metric_open']:.0f}, parked_connections metric "
            f"{out['metric_parked']:.0f}, fds {out['fds_held']}")
        log(f"  tlsfront RSS while holding {out['rss_held'] / 1024:.1f} MiB: "
            f"{per_conn:.1f} KiB per connection")
        log(f"  new client while holding: status {nc_status} complete={nc_complete} in {nc_ms:.1f} ms; "
            f"second GET on {out['sample'][1]} held connections: {out['sample'][0]} ok; "
            f"closed by server: {out['eof']}")
        closed_ok = wait_until(lambda: tf.metric("tlsfront_open_connections") == 0, 30)
        # Idle pooled upstream connections expire after pool_idle_timeout (2 s).
        wait_until(lambda: abs(tf.fd_count() - fds0) <= 10, 15)
        rss_after, fds_after = tf.rss_kib(), tf.fd_count()
        log(f"  after closing all: open_connections {tf.metric('tlsfront_open_connections'):.0f}, "
            f"RSS {rss_after / 1024:.1f} MiB, fds {fds_after}")
        # Memory freed by closing is kept by the allocator (glibc), and the
        # next rounds may still grow a little (fragmentation) before it
        # levels off. A per-connection leak would instead grow by about the
        # per-connection footprint every round: check the last round.
        n2 = max(1, n // 5)
        rounds = []
        for _ in range(3):
            out2 = asyncio.run(hold_many(tf, n2, rate * 2, res))
            wait_until(lambda: tf.metric("tlsfront_open_connections") == 0, 30)
            rounds.append((out2["held"], out2["rss_held"], tf.rss_kib(), out2["metric_parked"]))
        log(f"  then 3 rounds of {n2} connections: held {', '.join(str(r[0]) for r in rounds)}, parked "
            f"{', '.join(f'{r[3]:.0f}' for r in rounds)}; RSS after each "
            f"{rss_after / 1024:.1f} -> " + " -> ".join(f"{r[2] / 1024:.1f}" for r in rounds) + " MiB")
        last_growth = (rounds[-1][2] - rounds[-2][2]) / n2
        rss_rounds = rounds[-1][2]
        # How much of what the last round's connections take (per_conn each) stayed.
        footprint = max(1.0, n2 * per_conn)
        kept = (rounds[-1][2] - rounds[-2][2]) / footprint
        res.check(f"all {n} connections held", held == n and out["eof"] == 0,
                  f"{held} held, {out['eof']} closed by server; " + "; ".join(out["failures"][:3]))
        res.check("open_connections metric counts them", out["metric_open"] >= n, f"{out['metric_open']:.0f}")
        res.check("they are parked while held (tlsfront_parked_connections >= n)", out["metric_parked"] >= n,
                  f"{out['metric_parked']:.0f} parked of {n}")
        res.check("held connections still answer", out["sample"][0] == out["sample"][1],
                  f"{out['sample'][0]}/{out['sample'][1]}")
        res.check("a new client is served while they are held", nc_status == 200 and nc_complete,
                  f"{nc_status} in {nc_ms:.1f} ms")
        res.check("memory bounded: < 64 KiB per idle (parked) connection", per_conn < 64, f"{per_conn:.1f} KiB/conn")
        res.check(f"parked in each of the 3 rounds (>= {n2})", all(r[3] >= n2 for r in rounds),
                  ", ".join(f"{r[3]:.0f}" for r in rounds))
        res.check("open_connections back to 0 after closing", bool(closed_ok))
        res.check("fds back to baseline +- 10 after closing", abs(fds_after - fds0) <= 10, f"{fds0} -> {fds_after}")
        res.check(f"RSS levels off over 3 more rounds of {n2}: the last round keeps < 25% of its footprint "
                  f"(a leak keeps ~100%)", all(r[0] == n2 for r in rounds) and kept < 0.25,
                  f"last round {(rounds[-1][2] - rounds[-2][2]) / 1024:+.1f} MiB = {kept:.0%} of "
                  f"{footprint / 1024:.1f} MiB ({last_growth:+.2f} KiB/conn)")
        res.summary = (f"held={held}/{n} parked={out['metric_parked']:.0f} rss_before={rss0 / 1024:.1f}MiB rss_held={out['rss_held'] / 1024:.1f}MiB "
                       f"({per_conn:.1f} KiB/conn) rss_after={rss_after / 1024:.1f}MiB "
                       f"after 3 more rounds={rss_rounds / 1024:.1f}MiB (last {last_growth:+.1f} KiB/conn) new_client={nc_status} "
                       f"{nc_ms:.0f}ms")
    finally:
        tf.stop()

    # Observation: the life of an idle keep-alive connection.
    tf2 = Tlsfront("idle-keepalive", up.url, {"limits": {"header_read_timeout": "2s", "idle_timeout": "6s"}}).start()
    try:
        lives = asyncio.run(keepalive_lifetime(tf2))
        life = max(lives)
        msg = (f"an idle keep-alive connection with header_read_timeout=2s, idle_timeout=6s is closed after "
               f"{life:.1f} s")
        if life < 5:
            msg += (" (by header_read_timeout, the smaller of the two, as documented: with the defaults "
                    "an HTTP/1.1 keep-alive connection lasts 10 s)")
        res.note(msg)
    finally:
        tf2.stop()
        up.stop()
    return res


if __name__ == "__main__":
    print(run().line())
