"""Part 2: idle keep-alive connections and memory.

Opens IDLE_N (10,000) TLS keep-alive connections at IDLE_RATE (200/s); each
does one GET and then idles. tlsfront runs with max_connections = 12000,
idle_timeout = "5m" (long enough to hold them) and the default
header_read_timeout (10 s): an idle HTTP/1.1 keep-alive connection lives for
idle_timeout after its last response, parked or not, and header_read_timeout
only bounds a request head, from accept for the first and from its first
byte for every later one. Once all are open they are held IDLE_HOLD (60 s)
more, so every one of them idles far past header_read_timeout.

Reports tlsfront's RSS before, once they are open, at the end of the hold
(KiB per connection) and after closing them all; checks that all are held
through the hold (none closed by the server, open_connections metric, a
second GET on a sample of them), that they are parked
(tlsfront_parked_connections >= IDLE_N when opened and at the end of the
hold: idle HTTP/1.1 connections give hyper's buffers back after 500 ms, see
src/park.rs; the memory bound alone would pass without parking), that the
hold adds no memory and that a new client is still served meanwhile.

Then three more rounds of IDLE_N / 5: RSS must level off (a leak would grow
by about the per-connection footprint every round).

Last, `idle-keepalive`: with header_read_timeout = 2s and idle_timeout = 6s
an idle keep-alive connection is closed at idle_timeout (6 s after its last
response), not at header_read_timeout (2 s, the old HTTP/1.1 rule, when
hyper's header timer ran from the last response); one connection that asks
again after 4 s idle is served on the same connection and then lives 6 s
from that second response.
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


# The idle-keepalive sub-part: an idle HTTP/1.1 keep-alive connection is
# closed IDLE_TIMEOUT after its last response, not HEADER_READ_TIMEOUT.
KA_HEADER_READ_TIMEOUT = 2.0
KA_IDLE_TIMEOUT = 6.0
KA_TOLERANCE = 1.0  # closed within KA_IDLE_TIMEOUT +- this
KA_ASK_AGAIN = 4.0  # > KA_HEADER_READ_TIMEOUT, < KA_IDLE_TIMEOUT
# Memory per idle (parked) connection: the release build measures ~11-13
# KiB (docs/performance.md: 16 KiB target, 13.8 KiB measured on 2,000), so
# this is "no new memory"; the second, loose bound is the part's old one.
KIB_PER_CONN_MAX = 16.0
KIB_PER_CONN_LOOSE = 64.0
# Holding them must add nothing: RSS growth over the hold, per connection.
KIB_HOLD_GROWTH_MAX = 1.0


async def hold_many(tf: Tlsfront, n: int, rate: float, res: Result, hold: float = 0.0) -> dict:
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
    out["metric_open_opened"] = tf.metric("tlsfront_open_connections")
    out["metric_parked_opened"] = tf.metric("tlsfront_parked_connections")
    out["rss_opened"] = tf.rss_kib()
    # The hold: every connection idles `hold` seconds more (far past the
    # default header_read_timeout); the server must close none of them.
    out["hold"] = hold
    out["min_open"] = out["metric_open_opened"]
    out["min_parked"] = out["metric_parked_opened"]
    if hold > 0:
        h0 = time.monotonic()
        while (left := h0 + hold - time.monotonic()) > 0:
            await asyncio.sleep(min(10.0, left))
            m = tf.metrics()
            o, p = m.get("tlsfront_open_connections", 0.0), m.get("tlsfront_parked_connections", 0.0)
            out["min_open"], out["min_parked"] = min(out["min_open"], o), min(out["min_parked"], p)
            log(f"  ... held {time.monotonic() - h0:.0f}/{hold:g} s: open_connections {o:.0f}, parked {p:.0f}, "
                f"closed by server {sum(1 for r, _ in conns if r.at_eof())}, "
                f"tlsfront RSS {tf.rss_kib() / 1024:.1f} MiB")
    out["metric_open"] = tf.metric("tlsfront_open_connections")
    out["metric_parked"] = tf.metric("tlsfront_parked_connections")
    out["rss_held"] = tf.rss_kib()
    out["fds_held"] = tf.fd_count()
    # The held connections are really alive: the server closed none of them
    # (counted before the new client and the sample, which wake some).
    out["eof"] = sum(1 for r, _ in conns if r.at_eof())
    # A new client is still served while they are held.
    t = time.monotonic()
    try:
        r = await https_get(tf.port, ctx, "/", timeout=10)
        out["new_client"] = (r.status, r.complete, (time.monotonic() - t) * 1000)
    except Exception as e:  # noqa: BLE001
        out["new_client"] = (f"{type(e).__name__}: {e}", False, (time.monotonic() - t) * 1000)
    # A sample still answers a second request on the same connection.
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


async def wait_closed(reader: asyncio.StreamReader, limit: float) -> tuple[float, str]:
    """Seconds until the server closes (EOF or reset), and how; (limit, "open") if it did not."""
    t = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(100), limit)
        how = "eof" if not data else f"unexpected bytes {data[:40]!r}"
    except asyncio.TimeoutError:
        return limit, "open"
    except Exception as e:  # noqa: BLE001 - a reset is the server closing too
        how = type(e).__name__
    return time.monotonic() - t, how


def closed_how(how: str) -> bool:
    """wait_closed saw the server close the connection (EOF or a reset)."""
    return how != "open" and not how.startswith("unexpected")


async def keepalive_lifetime(tf: Tlsfront, n: int = 3) -> dict:
    """`n` connections: one GET, then idle until the server closes them;
    and one that asks again after KA_ASK_AGAIN s idle, then idles."""
    ctx = client_context(["http/1.1"])
    limit = KA_IDLE_TIMEOUT * 4

    async def one() -> tuple[float, str]:
        reader, writer = await open_tls(tf.port, ctx)
        try:
            writer.write(request_bytes("GET", "/"))
            await asyncio.wait_for(read_response(reader), 10)
            return await wait_closed(reader, limit)
        finally:
            await close_writer(writer, abort=True)

    async def again() -> tuple[str, float, str]:
        reader, writer = await open_tls(tf.port, ctx)
        try:
            writer.write(request_bytes("GET", "/"))
            await asyncio.wait_for(read_response(reader), 10)
            life, how = await wait_closed(reader, KA_ASK_AGAIN)
            if how != "open":
                return f"closed after {life:.1f} s idle ({how})", float("nan"), how
            writer.write(request_bytes("GET", "/"))
            r = await asyncio.wait_for(read_response(reader), 10)
            second = f"{r.status}" + ("" if r.complete else f" incomplete {r.error}")
            life, how = await wait_closed(reader, limit)
            return second, life, how
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}", float("nan"), "error"
        finally:
            await close_writer(writer, abort=True)

    res = await asyncio.gather(again(), *[one() for _ in range(n)])
    return {"again": res[0], "lives": list(res[1:])}


def run() -> Result:
    n = int(os.environ.get("IDLE_N", "10000"))
    rate = float(os.environ.get("IDLE_RATE", "200"))
    hold = float(os.environ.get("IDLE_HOLD", "60"))
    res = Result("idle")
    fd_limit = raise_fd_limit()
    if fd_limit < n + 200:
        res.note(f"client open-files limit {fd_limit} < {n + 200}")
    up = Upstream("ok", name="idle-upstream").start()
    # header_read_timeout is left at its default (10 s): it bounds request
    # heads, not the wait between requests, which idle_timeout bounds.
    tf = Tlsfront("idle", up.url, {"limits": {
        "max_connections": 12000,
        "idle_timeout": "5m",
    }, "upstream": {"pool_idle_timeout": "2s"}}).start()
    try:
        # Warm up (first connection, upstream pool), then the baseline.
        asyncio.run(https_get(tf.port, client_context(), "/"))
        time.sleep(3)
        rss0, fds0 = tf.rss_kib(), tf.fd_count()
        log(f"idle: opening {n} idle TLS keep-alive connections at {rate:g}/s, then holding them {hold:g} s "
            f"(idle_timeout 5m, header_read_timeout default 10s); tlsfront RSS before "
            f"{rss0 / 1024:.1f} MiB, {fds0} fds")
        out = asyncio.run(hold_many(tf, n, rate, res, hold))
        held = out["held"]
        per_conn = (out["rss_held"] - rss0) / held if held else float("nan")
        per_conn_opened = (out["rss_opened"] - rss0) / held if held else float("nan")
        hold_growth = (out["rss_held"] - out["rss_opened"]) / held if held else float("nan")
        nc_status, nc_complete, nc_ms = out["new_client"]
        log(f"  opened {held}/{n} in {out['open_secs']:.1f} s ({len(out['failures'])} failures): "
            f"open_connections {out['metric_open_opened']:.0f}, parked {out['metric_parked_opened']:.0f}, "
            f"RSS {out['rss_opened'] / 1024:.1f} MiB ({per_conn_opened:.1f} KiB per connection)")
        log(f"  after holding them {hold:g} s: open_connections {out['metric_open']:.0f} (lowest "
            f"{out['min_open']:.0f}), parked {out['metric_parked']:.0f} (lowest {out['min_parked']:.0f}), "
            f"closed by server {out['eof']}, fds {out['fds_held']}")
        log(f"  tlsfront RSS while holding {out['rss_held'] / 1024:.1f} MiB: "
            f"{per_conn:.1f} KiB per connection ({hold_growth:+.2f} KiB per connection over the hold)")
        log(f"  new client while holding: status {nc_status} complete={nc_complete} in {nc_ms:.1f} ms; "
            f"second GET on {out['sample'][1]} held connections: {out['sample'][0]} ok")
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
        res.check(f"all {n} connections held {hold:g} s past opening, none closed by the server "
                  f"(idle far past the default header_read_timeout)",
                  held == n and out["eof"] == 0 and out["min_open"] >= n,
                  f"{held} held, {out['eof']} closed by server, open_connections lowest {out['min_open']:.0f}; "
                  + "; ".join(out["failures"][:3]))
        res.check("open_connections metric counts them", out["metric_open"] >= n, f"{out['metric_open']:.0f}")
        res.check("they are parked while held (tlsfront_parked_connections >= n, opened and through the hold)",
                  min(out["metric_parked_opened"], out["min_parked"], out["metric_parked"]) >= n,
                  f"{out['metric_parked_opened']:.0f} when opened, lowest {out['min_parked']:.0f}, "
                  f"{out['metric_parked']:.0f} at the end, of {n}")
        res.check("held connections still answer", out["sample"][0] == out["sample"][1],
                  f"{out['sample'][0]}/{out['sample'][1]}")
        res.check("a new client is served while they are held", nc_status == 200 and nc_complete,
                  f"{nc_status} in {nc_ms:.1f} ms")
        res.check(f"no new memory: < {KIB_PER_CONN_MAX:g} KiB per idle (parked) connection after the hold "
                  f"(and < {KIB_PER_CONN_LOOSE:g})", per_conn < KIB_PER_CONN_MAX and per_conn < KIB_PER_CONN_LOOSE,
                  f"{per_conn:.1f} KiB/conn")
        res.check(f"holding them adds nothing: RSS growth over the {hold:g} s hold < {KIB_HOLD_GROWTH_MAX:g} "
                  f"KiB per connection", hold_growth < KIB_HOLD_GROWTH_MAX,
                  f"{(out['rss_held'] - out['rss_opened']) / 1024:+.1f} MiB = {hold_growth:+.2f} KiB/conn")
        res.check(f"parked in each of the 3 rounds (>= {n2})", all(r[3] >= n2 for r in rounds),
                  ", ".join(f"{r[3]:.0f}" for r in rounds))
        res.check("open_connections back to 0 after closing", bool(closed_ok))
        res.check("fds back to baseline +- 10 after closing", abs(fds_after - fds0) <= 10, f"{fds0} -> {fds_after}")
        res.check(f"RSS levels off over 3 more rounds of {n2}: the last round keeps < 25% of its footprint "
                  f"(a leak keeps ~100%)", all(r[0] == n2 for r in rounds) and kept < 0.25,
                  f"last round {(rounds[-1][2] - rounds[-2][2]) / 1024:+.1f} MiB = {kept:.0%} of "
                  f"{footprint / 1024:.1f} MiB ({last_growth:+.2f} KiB/conn)")
        res.summary = (f"held={held}/{n} for {hold:g}s parked={out['metric_parked']:.0f} "
                       f"rss_before={rss0 / 1024:.1f}MiB rss_held={out['rss_held'] / 1024:.1f}MiB "
                       f"({per_conn:.1f} KiB/conn, hold {hold_growth:+.2f}) rss_after={rss_after / 1024:.1f}MiB "
                       f"after 3 more rounds={rss_rounds / 1024:.1f}MiB (last {last_growth:+.1f} KiB/conn) "
                       f"new_client={nc_status} {nc_ms:.0f}ms")
    finally:
        tf.stop()

    # idle-keepalive: an idle keep-alive connection lives for idle_timeout,
    # not header_read_timeout.
    tf2 = Tlsfront("idle-keepalive", up.url, {"limits": {
        "header_read_timeout": f"{KA_HEADER_READ_TIMEOUT:g}s",
        "idle_timeout": f"{KA_IDLE_TIMEOUT:g}s",
    }}).start()
    try:
        log(f"idle-keepalive: header_read_timeout={KA_HEADER_READ_TIMEOUT:g}s idle_timeout={KA_IDLE_TIMEOUT:g}s")
        ka = asyncio.run(keepalive_lifetime(tf2))
        lives = [life for life, how in ka["lives"]]
        hows = sorted({how for _, how in ka["lives"]})
        second, again_life, again_how = ka["again"]
        lo, hi = KA_IDLE_TIMEOUT - KA_TOLERANCE, KA_IDLE_TIMEOUT + KA_TOLERANCE
        log(f"  idle connections closed by the server after {', '.join(f'{x:.2f}' for x in lives)} s ({', '.join(hows)}); "
            f"asked again after {KA_ASK_AGAIN:g} s idle: {second}, then closed after {again_life:.2f} s ({again_how})")
        res.check(f"idle-keepalive: an idle keep-alive connection is closed at idle_timeout ({KA_IDLE_TIMEOUT:g} s "
                  f"+- {KA_TOLERANCE:g}), not at header_read_timeout ({KA_HEADER_READ_TIMEOUT:g} s)",
                  all(lo <= x <= hi for x in lives) and all(closed_how(h) for h in hows),
                  f"closed after {', '.join(f'{x:.2f}' for x in lives)} s")
        res.check(f"idle-keepalive: asked again after {KA_ASK_AGAIN:g} s idle it is served on the same connection, "
                  f"then closed {KA_IDLE_TIMEOUT:g} s +- {KA_TOLERANCE:g} after that response",
                  second == "200" and closed_how(again_how) and lo <= again_life <= hi,
                  f"second GET {second}, closed after {again_life:.2f} s ({again_how})")
        res.summary += f"; keep-alive (hrt {KA_HEADER_READ_TIMEOUT:g}s, idle {KA_IDLE_TIMEOUT:g}s) closed at {max(lives):.1f}s"
    finally:
        tf2.stop()
        up.stop()
    return res


if __name__ == "__main__":
    print(run().line())
