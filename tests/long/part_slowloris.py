"""Part 1: slowloris.

`slowloris`: SLOW_N (1,000) TLS connections, opened at SLOW_RATE (200/s) by a
separate attacker process, each send a partial HTTP/1.1 request head and then
trickle one header byte every ~2 s. tlsfront runs with
`[limits] header_read_timeout = "5s"` (idle_timeout at its default, 60 s).
Half of them (`h1-partial-head`) start the head right after the handshake:
header_read_timeout runs from accept; each must be cut off within
header_read_timeout + 5 s of its first head byte (they are timed while the
attacker opens 200 connections a second, loosely). The other half
(`h1-after-idle`) first complete one GET on the kept-alive connection, stay
idle IDLE_PAUSE (7 s, longer than header_read_timeout: the old HTTP/1.1 rule,
hyper's header timer running from the last response, cut them there; they
are parked meanwhile) and only then start trickling the next head:
header_read_timeout runs from that head's first byte. None may be closed
during its idle pause, and each must be cut off at header_read_timeout of
its head's first byte: not earlier than 1 s before, not later than 0.5 s
after. Meanwhile a normal client (this process) does
sequential HTTPS GETs, each on a fresh TLS connection, through tlsfront to a
small upstream: zero errors, p99 < 500 ms.

`slowloris-h2`: the same attack spoken over HTTP/2 (ALPN h2): connections
that trickle the HTTP/2 connection preface, and connections that send the
preface and SETTINGS and then trickle a HEADERS frame: a request head that
takes longer than header_read_timeout to arrive is slowloris whatever the
protocol; they must be cut off within header_read_timeout + 5 s.

The attacker runs as `python part_slowloris.py attack ...` and prints one
JSON line with what each connection saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    HERE, Result, Tlsfront, Upstream, client_context, close_writer, https_get, log, median,
    open_tls, percentile, raise_fd_limit, read_response, request_bytes, workdir,
)

HEADER_READ_TIMEOUT = 5.0
# Closed within header_read_timeout + GRACE of the first head byte: the
# heads that start right after the handshake (h1-partial-head, HTTP/2),
# timed from accept while the attacker is busy with 200 handshakes a second
# on a shared machine, so measured loosely (a client-side delay of a second
# or two either way is the attacker's, not tlsfront's).
GRACE = 5.0
# h1-after-idle: idle this long after one GET before trickling the next head
# (longer than HEADER_READ_TIMEOUT, far shorter than the default idle_timeout).
IDLE_PAUSE = 7.0
# Its head starts after the opening burst, so its close is measured closely:
# at header_read_timeout after the head's first byte, no earlier than EARLY
# before it (the timer starts at that byte, not at the last response) and no
# later than TOLERANCE after it.
EARLY = 1.0
TOLERANCE = 0.5
# At least this share of them is seen parked at once during the idle pause
# (the next head then wakes a parked connection).
PARKED_MIN_SHARE = 0.5
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# HEADERS frame on stream 1 announcing a 100-byte header block (END_HEADERS).
H2_HEADERS_START = b"\x00\x00\x64\x01\x04\x00\x00\x00\x01"

VARIANTS = {
    # name: (ALPN, bytes sent at once, bytes trickled one at a time)
    "h1-partial-head": (["http/1.1"], b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\nX-Slow: ",
                        b"a" * 10_000),
    # The same head, sent after one complete GET and IDLE_PAUSE s of idle.
    "h1-after-idle": (["http/1.1"], b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\nX-Slow: ",
                      b"a" * 10_000),
    "h2-preface": (["h2"], b"P", H2_PREFACE[1:] + H2_SETTINGS + b"\x00" * 10_000),
    "h2-headers": (["h2"], H2_PREFACE + H2_SETTINGS + H2_HEADERS_START, b"\x82" * 10_000),
}


# ------------------------------------------------------------------ attacker


async def slow_conn(port: int, variant: str, trickle: float, hold: float) -> dict:
    alpn, first, rest = VARIANTS[variant]
    ctx = client_context(alpn)
    r = {"variant": variant, "connected": False, "closed": False, "after": None, "trickled": 0, "error": "",
         "closed_idle": None, "connect_s": None}
    t_connect = time.monotonic()
    try:
        reader, writer = await open_tls(port, ctx, 20)
    except Exception as e:  # noqa: BLE001
        r["error"] = f"connect: {type(e).__name__}: {e}"
        return r
    r["connected"] = True
    r["connect_s"] = time.monotonic() - t_connect
    if variant == "h1-after-idle":
        # One complete request on the kept-alive connection, then idle.
        try:
            writer.write(request_bytes("GET", "/"))
            resp = await asyncio.wait_for(read_response(reader), 20)
            if resp.status != 200 or not resp.complete:
                raise ValueError(f"status {resp.status} {resp.error}")
        except Exception as e:  # noqa: BLE001
            r["connected"] = False
            r["error"] = f"first GET: {type(e).__name__}: {e}"
            await close_writer(writer, abort=True)
            return r
        t_idle = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(65536), IDLE_PAUSE)
            # Closed (or spoken to) while idle: the old rule, or worse.
            r["closed_idle"] = time.monotonic() - t_idle
            r["error"] = "EOF while idle" if not data else f"bytes while idle: {data[:40]!r}"
        except asyncio.TimeoutError:
            pass
        except Exception as e:  # noqa: BLE001 - a reset is the server closing too
            r["closed_idle"] = time.monotonic() - t_idle
            r["error"] = f"while idle: {type(e).__name__}"
        if r["closed_idle"] is not None:
            r["closed"] = True
            await close_writer(writer, abort=True)
            return r
    t0 = time.monotonic()
    writer.write(first)

    async def trickle_loop():
        i = 0
        while not writer.transport.is_closing():
            await asyncio.sleep(trickle)
            if writer.transport.is_closing():
                return
            writer.write(rest[i:i + 1])
            i += 1
            r["trickled"] = i

    trickler = asyncio.create_task(trickle_loop())
    try:
        deadline = t0 + hold
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            data = await asyncio.wait_for(reader.read(65536), left)
            if not data:
                r["closed"], r["after"] = True, time.monotonic() - t0
                break
    except asyncio.TimeoutError:
        pass
    except Exception as e:  # noqa: BLE001 - a reset is the server closing too
        r["closed"], r["after"] = True, time.monotonic() - t0
        r["error"] = f"{type(e).__name__}"
    trickler.cancel()
    await close_writer(writer, abort=True)
    return r


async def attack(port: int, n: int, rate: float, variants: list[str], trickle: float, hold: float) -> list[dict]:
    tasks = []
    t0 = time.monotonic()
    for i in range(n):
        # Pace the handshakes: TLS client handshakes are CPU-heavy in Python.
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(slow_conn(port, variants[i % len(variants)], trickle, hold)))
    return await asyncio.gather(*tasks)


def attacker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--variants", default="h1-partial-head")
    p.add_argument("--trickle", type=float, default=2.0)
    p.add_argument("--hold", type=float, default=30.0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    raise_fd_limit()
    t0 = time.monotonic()
    res = asyncio.run(attack(a.port, a.n, a.rate, a.variants.split(","), a.trickle, a.hold))
    Path(a.out).write_text(json.dumps({"seconds": time.monotonic() - t0, "conns": res}))


def start_attacker(name: str, port: int, n: int, rate: float, variants: list[str], hold: float) -> subprocess.Popen:
    out = workdir(name) / "attacker.json"
    out.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "part_slowloris.py"), "attack", "--port", str(port), "--n", str(n),
         "--rate", str(rate), "--variants", ",".join(variants), "--hold", str(hold), "--out", str(out)],
        stdin=subprocess.DEVNULL,
    )
    proc.out = out  # type: ignore[attr-defined]
    return proc


def attacker_result(proc: subprocess.Popen, timeout: float) -> dict:
    proc.wait(timeout=timeout)
    return json.loads(proc.out.read_text())  # type: ignore[attr-defined]


# ------------------------------------------------------------------ normal client


async def normal_client(port: int, stop: asyncio.Event, pause: float = 0.02) -> tuple[list[float], list[str]]:
    ctx = client_context(["http/1.1"])
    lat, errors = [], []
    while not stop.is_set():
        t = time.monotonic()
        try:
            resp = await https_get(port, ctx, "/", timeout=10)
            if resp.status != 200 or not resp.complete or resp.body != b"hello\n":
                errors.append(f"status {resp.status} complete={resp.complete} {resp.error}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
        lat.append((time.monotonic() - t) * 1000)
        await asyncio.sleep(pause)
    return lat, errors


async def during_attack(port: int, attacker: subprocess.Popen,
                        tf: Tlsfront | None = None) -> tuple[list[float], list[str], float]:
    """The normal client's latencies and errors while the attacker runs, and
    (with `tf`) the highest tlsfront_parked_connections seen meanwhile."""
    stop = asyncio.Event()
    task = asyncio.create_task(normal_client(port, stop))
    peak_parked = 0.0
    next_sample = 0.0
    while attacker.poll() is None:
        await asyncio.sleep(0.2)
        if tf is not None and time.monotonic() >= next_sample:
            next_sample = time.monotonic() + 0.5
            try:
                parked = await asyncio.to_thread(tf.metric, "tlsfront_parked_connections")
                peak_parked = max(peak_parked, parked)
            except OSError:
                pass
    stop.set()
    lat, errors = await task
    return lat, errors, peak_parked


# ------------------------------------------------------------------ parts


def summarise(conns: list[dict], bound: float, early: float = 0.0) -> dict:
    """Closed "in bound": between `early` and `bound` seconds after the first
    head byte. An h1-after-idle connection closed during its idle pause
    (`closed_idle`) has no `after` and is never in bound."""
    connected = [c for c in conns if c["connected"]]
    closed_idle = [c["closed_idle"] for c in connected if c.get("closed_idle") is not None]
    closed = [c for c in connected if c["closed"] and c["after"] is not None]
    afters = [c["after"] for c in closed]
    in_bound = [a for a in afters if early <= a <= bound]
    return {
        "opened": len(connected),
        "connect_errors": len(conns) - len(connected),
        "closed": len(closed),
        "closed_in_bound": len(in_bound),
        "too_early": sum(1 for a in afters if a < early),
        "closed_idle": len(closed_idle),
        "closed_idle_median_s": median(closed_idle),
        "median_s": median(afters),
        "min_s": min(afters) if afters else float("nan"),
        "max_s": max(afters) if afters else float("nan"),
        "still_open": len(connected) - len(closed) - len(closed_idle),
        "first_connect_error": next((c["error"] for c in conns if not c["connected"]), ""),
        "first_idle_error": next((c["error"] for c in connected if c.get("closed_idle") is not None), ""),
        "connect_median_s": median([c["connect_s"] for c in connected if c.get("connect_s") is not None]),
        "connect_max_s": max([c["connect_s"] for c in connected if c.get("connect_s") is not None], default=float("nan")),
    }


def run(n: int | None = None, rate: float | None = None) -> Result:
    n = n or int(os.environ.get("SLOW_N", "1000"))
    rate = rate or float(os.environ.get("SLOW_RATE", "200"))
    res = Result("slowloris")
    raise_fd_limit()
    up = Upstream("ok", name="slowloris-upstream").start()
    tf = Tlsfront("slowloris", up.url, {"limits": {"header_read_timeout": f"{HEADER_READ_TIMEOUT:g}s"}}).start()
    try:
        hold = HEADER_READ_TIMEOUT + GRACE + 10  # the attacker gives up on a connection after this
        variants = ["h1-partial-head", "h1-after-idle"]
        log(f"slowloris: {n} slow TLS connections at {rate:g}/s ({', '.join(variants)}: the second after one GET "
            f"and {IDLE_PAUSE:g} s idle), one header byte every 2 s; header_read_timeout={HEADER_READ_TIMEOUT:g}s")
        attacker = start_attacker("slowloris", tf.port, n, rate, variants, hold)
        lat, errors, peak_parked = asyncio.run(during_attack(tf.port, attacker, tf))
        att = attacker_result(attacker, 30)
        p50, p99, mx = percentile(lat, 50), percentile(lat, 99), max(lat) if lat else float("nan")
        log(f"  normal client: {len(lat)} GETs, {len(errors)} errors, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {mx:.1f} ms")
        res.check("normal client: zero errors", not errors, "; ".join(errors[:3]))
        res.check("normal client: p99 < 500 ms", p99 < 500, f"p99 {p99:.1f} ms")
        parts = []
        opened = 0
        for v in variants:
            if v == "h1-after-idle":
                early, bound = HEADER_READ_TIMEOUT - EARLY, HEADER_READ_TIMEOUT + TOLERANCE
            else:
                early, bound = 0.0, HEADER_READ_TIMEOUT + GRACE
            s = summarise([c for c in att["conns"] if c["variant"] == v], bound, early)
            opened += s["opened"]
            log(f"  {v}: {s['opened']} opened ({s['connect_errors']} failed), "
                + (f"{s['closed_idle']} closed during the {IDLE_PAUSE:g} s idle pause"
                   + (f" (median after {s['closed_idle_median_s']:.2f} s)" if s["closed_idle"] else "") + ", "
                   if v == "h1-after-idle" else "")
                + f"{s['closed']} closed by the server after the first head byte: median {s['median_s']:.2f} s, "
                f"min {s['min_s']:.2f} s, max {s['max_s']:.2f} s, {s['closed_in_bound']} within "
                f"[{early:g}, {bound:g}] s, {s['still_open']} still open after {hold:g} s (TLS handshake as the "
                f"attacker saw it: median {s['connect_median_s']:.2f} s, max {s['connect_max_s']:.2f} s)")
            if v == "h1-after-idle":
                res.check(f"{v}: none closed during the {IDLE_PAUSE:g} s idle pause (idle_timeout bounds it, "
                          f"not header_read_timeout)", s["closed_idle"] == 0 and s["opened"] > 0,
                          f"{s['closed_idle']}/{s['opened']} closed while idle"
                          + (f", median after {s['closed_idle_median_s']:.2f} s: {s['first_idle_error']}"
                             if s["closed_idle"] else ""))
                res.check(f"{v}: parked during the idle pause (peak tlsfront_parked_connections >= "
                          f"{PARKED_MIN_SHARE:.0%} of them)", peak_parked >= s["opened"] * PARKED_MIN_SHARE,
                          f"peak {peak_parked:.0f} of {s['opened']}")
                res.check(f"{v}: all closed at header_read_timeout ({HEADER_READ_TIMEOUT:g} s - {EARLY:g} / "
                          f"+ {TOLERANCE:g}) after the head's first byte", s["closed_in_bound"] == s["opened"] > 0,
                          f"{s['closed_in_bound']}/{s['opened']}, {s['too_early']} too early, "
                          f"{s['still_open']} still open, {s['closed_idle']} closed while idle")
                parts.append(f"{v} idle {IDLE_PAUSE:g}s then closed {s['closed_in_bound']}/{s['opened']} "
                             f"median={s['median_s']:.2f}s min={s['min_s']:.2f}s max={s['max_s']:.2f}s "
                             f"(closed while idle {s['closed_idle']}, parked peak {peak_parked:.0f})")
            else:
                res.check(f"{v}: all closed within header_read_timeout + {GRACE:g} s",
                          s["closed_in_bound"] == s["opened"] > 0,
                          f"{s['closed_in_bound']}/{s['opened']}, {s['still_open']} still open")
                parts.append(f"{v} closed {s['closed_in_bound']}/{s['opened']} median={s['median_s']:.2f}s "
                             f"max={s['max_s']:.2f}s")
        res.check(f"all {n} slow connections opened", opened == n,
                  next((c["error"] for c in att["conns"] if not c["connected"]), ""))
        res.check("tlsfront healthy afterwards", tf.alive() and tf.healthz() == 200)
        res.summary = (f"normal GETs={len(lat)} errors={len(errors)} p50={p50:.1f}ms p99={p99:.1f}ms max={mx:.1f}ms; "
                       + "; ".join(parts))
    finally:
        tf.stop()
        up.stop()
    return res


def run_h2(n: int | None = None) -> Result:
    n = n or int(os.environ.get("SLOW_H2_N", "100"))
    res = Result("slowloris-h2")
    raise_fd_limit()
    up = Upstream("ok", name="slowloris-h2-upstream").start()
    tf = Tlsfront("slowloris-h2", up.url, {"limits": {"header_read_timeout": f"{HEADER_READ_TIMEOUT:g}s"}}).start()
    try:
        bound = HEADER_READ_TIMEOUT + GRACE
        hold = bound + 10
        variants = ["h2-preface", "h2-headers"]
        log(f"slowloris-h2: {n} HTTP/2 connections ({', '.join(variants)}), one byte every 2 s; "
            f"header_read_timeout={HEADER_READ_TIMEOUT:g}s")
        attacker = start_attacker("slowloris-h2", tf.port, n, 100, variants, hold)
        lat, errors, _ = asyncio.run(during_attack(tf.port, attacker))
        att = attacker_result(attacker, 30)
        parts = []
        all_ok = True
        for v in variants:
            s = summarise([c for c in att["conns"] if c["variant"] == v], bound)
            log(f"  {v}: {s['opened']} opened, {s['closed']} closed by the server (median {s['median_s']:.2f} s), "
                f"{s['closed_in_bound']} within {bound:g} s, {s['still_open']} still open after {hold:g} s "
                f"of trickling")
            ok = s["closed_in_bound"] == s["opened"] and s["opened"] > 0
            all_ok &= ok
            res.check(f"{v}: all closed within header_read_timeout + {GRACE:g} s", ok,
                      f"{s['closed_in_bound']}/{s['opened']} closed in bound, {s['still_open']} still open")
            parts.append(f"{v} closed {s['closed_in_bound']}/{s['opened']}")
        log(f"  normal client meanwhile: {len(lat)} GETs, {len(errors)} errors, p99 {percentile(lat, 99):.1f} ms")
        res.check("normal client: zero errors", not errors, "; ".join(errors[:3]))
        res.check("tlsfront healthy afterwards", tf.alive() and tf.healthz() == 200)
        res.summary = "; ".join(parts) + f" (in {bound:g}s); normal GETs={len(lat)} errors={len(errors)}"
    finally:
        tf.stop()
        up.stop()
    return res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "attack":
        attacker_main(sys.argv[2:])
    else:
        r = run_h2() if "h2" in sys.argv[1:] else run()
        print(r.line())
