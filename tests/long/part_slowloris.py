"""Part 1: slowloris.

`slowloris`: SLOW_N (1,000) TLS connections, opened at SLOW_RATE (200/s) by a
separate attacker process, each send a partial HTTP/1.1 request head and then
trickle one header byte every ~2 s. tlsfront runs with
`[limits] header_read_timeout = "5s"` and must cut each of them off within
header_read_timeout + 5 s of its first head byte. Meanwhile a normal client
(this process) does sequential HTTPS GETs, each on a fresh TLS connection,
through tlsfront to a small upstream: zero errors, p99 < 500 ms.

`slowloris-h2`: the same attack spoken over HTTP/2 (ALPN h2): connections
that trickle the HTTP/2 connection preface, and connections that send the
preface and SETTINGS and then trickle a HEADERS frame. The same bound
applies: a request head that takes longer than header_read_timeout to
arrive is slowloris whatever the protocol.

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
    open_tls, percentile, raise_fd_limit, workdir,
)

HEADER_READ_TIMEOUT = 5.0
GRACE = 5.0
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# HEADERS frame on stream 1 announcing a 100-byte header block (END_HEADERS).
H2_HEADERS_START = b"\x00\x00\x64\x01\x04\x00\x00\x00\x01"

VARIANTS = {
    # name: (ALPN, bytes sent at once, bytes trickled one at a time)
    "h1-partial-head": (["http/1.1"], b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\nX-Slow: ",
                        b"a" * 10_000),
    "h2-preface": (["h2"], b"P", H2_PREFACE[1:] + H2_SETTINGS + b"\x00" * 10_000),
    "h2-headers": (["h2"], H2_PREFACE + H2_SETTINGS + H2_HEADERS_START, b"\x82" * 10_000),
}


# ------------------------------------------------------------------ attacker


async def slow_conn(port: int, variant: str, trickle: float, hold: float) -> dict:
    alpn, first, rest = VARIANTS[variant]
    ctx = client_context(alpn)
    r = {"variant": variant, "connected": False, "closed": False, "after": None, "trickled": 0, "error": ""}
    try:
        reader, writer = await open_tls(port, ctx, 20)
    except Exception as e:  # noqa: BLE001
        r["error"] = f"connect: {type(e).__name__}: {e}"
        return r
    r["connected"] = True
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


async def during_attack(port: int, attacker: subprocess.Popen) -> tuple[list[float], list[str]]:
    stop = asyncio.Event()
    task = asyncio.create_task(normal_client(port, stop))
    while attacker.poll() is None:
        await asyncio.sleep(0.2)
    stop.set()
    return await task


# ------------------------------------------------------------------ parts


def summarise(conns: list[dict], bound: float) -> dict:
    connected = [c for c in conns if c["connected"]]
    closed = [c for c in connected if c["closed"]]
    afters = [c["after"] for c in closed]
    in_bound = [a for a in afters if a <= bound]
    return {
        "opened": len(connected),
        "connect_errors": len(conns) - len(connected),
        "closed": len(closed),
        "closed_in_bound": len(in_bound),
        "median_s": median(afters),
        "max_s": max(afters) if afters else float("nan"),
        "still_open": len(connected) - len(closed),
        "first_connect_error": next((c["error"] for c in conns if not c["connected"]), ""),
    }


def run(n: int | None = None, rate: float | None = None) -> Result:
    n = n or int(os.environ.get("SLOW_N", "1000"))
    rate = rate or float(os.environ.get("SLOW_RATE", "200"))
    res = Result("slowloris")
    raise_fd_limit()
    up = Upstream("ok", name="slowloris-upstream").start()
    tf = Tlsfront("slowloris", up.url, {"limits": {"header_read_timeout": f"{HEADER_READ_TIMEOUT:g}s"}}).start()
    try:
        bound = HEADER_READ_TIMEOUT + GRACE
        hold = bound + 10  # the attacker gives up on a connection after this
        log(f"slowloris: {n} slow TLS connections at {rate:g}/s, one header byte every 2 s; "
            f"header_read_timeout={HEADER_READ_TIMEOUT:g}s")
        attacker = start_attacker("slowloris", tf.port, n, rate, ["h1-partial-head"], hold)
        lat, errors = asyncio.run(during_attack(tf.port, attacker))
        att = attacker_result(attacker, 30)
        s = summarise(att["conns"], bound)
        p50, p99, mx = percentile(lat, 50), percentile(lat, 99), max(lat) if lat else float("nan")
        log(f"  normal client: {len(lat)} GETs, {len(errors)} errors, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {mx:.1f} ms")
        log(f"  slow connections: {s['opened']} opened ({s['connect_errors']} connect errors), {s['closed']} closed "
            f"by the server, median after {s['median_s']:.2f} s, max {s['max_s']:.2f} s, "
            f"{s['closed_in_bound']} within {bound:g} s, {s['still_open']} still open after {hold:g} s")
        res.check("normal client: zero errors", not errors, "; ".join(errors[:3]))
        res.check("normal client: p99 < 500 ms", p99 < 500, f"p99 {p99:.1f} ms")
        res.check(f"all {n} slow connections opened", s["opened"] == n, s["first_connect_error"])
        res.check(f"all slow connections closed within header_read_timeout + {GRACE:g} s",
                  s["closed_in_bound"] == s["opened"] and s["opened"] > 0,
                  f"{s['closed_in_bound']}/{s['opened']}")
        res.check("tlsfront healthy afterwards", tf.alive() and tf.healthz() == 200)
        res.summary = (f"normal GETs={len(lat)} errors={len(errors)} p50={p50:.1f}ms p99={p99:.1f}ms max={mx:.1f}ms; "
                       f"slow closed {s['closed_in_bound']}/{s['opened']} median={s['median_s']:.2f}s "
                       f"max={s['max_s']:.2f}s")
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
        lat, errors = asyncio.run(during_attack(tf.port, attacker))
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
