"""Part 3: client faults and TLS garbage.

Clients that vanish:
  - mid-request: POST /upload announcing 1,000,000 bytes, send half, close (FAULT_N = 200);
  - mid-response: GET a 50 MB download through tlsfront, close after 1 MB (FAULT_N = 200);
  - and FAULT_N / 4 HTTP/2 clients cancel such a download (RST_STREAM) and
    then use the same connection again.
TLS garbage (handshake_timeout = "3s"):
  - FAULT_N connections sending a TLS record header followed by random bytes;
  - FAULT_N sending the first half of a real ClientHello, then closing their side;
  - FAULT_N sending a whole ClientHello and then nothing;
  - and, beside the brief, 50 sending random non-TLS bytes (answered as
    plain HTTP on the TLS port) and 50 sending nothing at all.
Afterwards tlsfront is healthy (/healthz 200, still serves), open_connections
is back to 0, its fd count is back to the baseline +- 10, and
tls_handshake_failures_total counted the failed handshakes.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from h2client import h2_cancel_mid_download  # noqa: E402
from common import (  # noqa: E402
    HOST, SNI, Result, Tlsfront, Upstream, client_context, close_writer, https_get, log, median, open_tls,
    raise_fd_limit, read_response, request_bytes, wait_until,
)

HANDSHAKE_TIMEOUT = 3.0


async def bounded(n: int, concurrency: int, fn) -> list:
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            return await fn(i)

    return await asyncio.gather(*[one(i) for i in range(n)])


async def vanish_mid_request(port: int, ctx) -> str:
    reader, writer = await open_tls(port, ctx)
    writer.write(request_bytes("POST", "/upload", {"Content-Type": "application/octet-stream",
                                                   "Content-Length": "1000000"}))
    writer.write(os.urandom(500_000))
    await writer.drain()
    # Let the half body reach tlsfront (and the app) before vanishing.
    await asyncio.sleep(random.uniform(0.05, 0.2))
    writer.transport.abort()
    return "ok"


async def cancel_h2_stream(port: int) -> str:
    try:
        got, status2 = await h2_cancel_mid_download(port, "/bytes?n=50000000", 1 << 20)
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    if got < (1 << 20) or status2 != 200:
        return f"unexpected: {got} bytes before cancelling, then status {status2}"
    return "ok"


async def vanish_mid_response(port: int, ctx) -> str:
    reader, writer = await open_tls(port, ctx)
    writer.write(request_bytes("GET", "/bytes?n=50000000"))
    resp = await asyncio.wait_for(read_response(reader, keep_body=False, stop_after=1 << 20), 30)
    writer.transport.abort()
    if resp.status != 200 or resp.length < (1 << 20):
        return f"unexpected: status {resp.status}, {resp.length} bytes, {resp.error}"
    return "ok"


def client_hello() -> bytes:
    """A real ClientHello as Python's OpenSSL would send it to tlsfront."""
    ctx = client_context(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=SNI)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


async def raw_probe(port: int, payload: bytes, shut_wr: bool, hold: float) -> tuple[bool, float, int]:
    """Sends `payload` on a plain TCP connection (optionally half-closing) and
    waits up to `hold` s for the server to close. (closed_by_server, after_s, bytes_received)"""
    reader, writer = await asyncio.open_connection(HOST, port)
    t0 = time.monotonic()
    got = 0
    try:
        if payload:
            writer.write(payload)
            await writer.drain()
        if shut_wr:
            writer.write_eof()
        deadline = t0 + hold
        while True:
            data = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            if not data:
                return True, time.monotonic() - t0, got
            got += len(data)
    except asyncio.TimeoutError:
        return False, time.monotonic() - t0, got
    except (ConnectionError, OSError):
        return True, time.monotonic() - t0, got
    finally:
        writer.transport.abort()


def tls_garbage() -> bytes:
    body = os.urandom(random.randint(50, 1500))
    return b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body


def plain_garbage() -> bytes:
    g = bytearray(os.urandom(random.randint(50, 1500)))
    if g[0] == 0x16:
        g[0] = 0x17
    return bytes(g)


async def garbage_suite(port: int, n: int, hello: bytes) -> dict:
    hold = HANDSHAKE_TIMEOUT + 5
    kinds = {
        "tls-garbage": (n, lambda: tls_garbage(), True, True),
        "truncated-hello": (n, lambda: hello[: len(hello) // 2], True, True),
        "hello-then-nothing": (n, lambda: hello, False, True),
        "plain-garbage": (50, lambda: plain_garbage(), False, False),
        "silent": (50, lambda: b"", False, False),
    }
    out = {}
    for kind, (count, make, shut_wr, counted) in kinds.items():
        results = await bounded(count, 100, lambda i, make=make, shut_wr=shut_wr: raw_probe(port, make(), shut_wr,
                                                                                            hold))
        closed = [r for r in results if r[0]]
        out[kind] = {
            "n": count,
            "closed": len(closed),
            "median_s": median([r[1] for r in closed]),
            "max_s": max([r[1] for r in closed], default=float("nan")),
            "answered_bytes": sum(1 for r in results if r[2] > 0),
            "counted": counted,
        }
    return out


def run() -> Result:
    n = int(os.environ.get("FAULT_N", "200"))
    res = Result("client-faults")
    raise_fd_limit()
    up = Upstream("ok", name="client-faults-upstream").start()
    tf = Tlsfront("client-faults", up.url, {
        "limits": {"handshake_timeout": f"{HANDSHAKE_TIMEOUT:g}s"},
        "upstream": {"pool_idle_timeout": "2s"},
    }).start()
    try:
        ctx = client_context(["http/1.1"])
        asyncio.run(https_get(tf.port, ctx, "/"))
        time.sleep(3)
        fds0, rss0 = tf.fd_count(), tf.rss_kib()
        m0 = tf.metrics()
        log(f"client-faults: baseline {fds0} fds, RSS {rss0 / 1024:.1f} MiB")

        t = time.monotonic()
        r1 = asyncio.run(bounded(n, 20, lambda i: vanish_mid_request(tf.port, ctx)))
        bad1 = [r for r in r1 if r != "ok"]
        log(f"  {n} clients vanished mid-request (half of a 1 MB upload) in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        r2 = asyncio.run(bounded(n, 10, lambda i: vanish_mid_response(tf.port, ctx)))
        bad2 = [r for r in r2 if r != "ok"]
        log(f"  {n} clients vanished mid-response (after 1 MB of 50 MB) in {time.monotonic() - t:.1f} s; "
            f"{len(bad2)} unexpected")
        t = time.monotonic()
        n_h2 = max(1, n // 4)
        r3 = asyncio.run(bounded(n_h2, 10, lambda i: cancel_h2_stream(tf.port)))
        bad3 = [r for r in r3 if r != "ok"]
        log(f"  {n_h2} HTTP/2 clients cancelled a 50 MB download (RST_STREAM after 1 MB) and reused the "
            f"connection in {time.monotonic() - t:.1f} s; {len(bad3)} unexpected")
        hello = client_hello()
        g = asyncio.run(garbage_suite(tf.port, n, hello))
        for kind, s in g.items():
            log(f"  {kind}: {s['closed']}/{s['n']} closed by the server (median {s['median_s']:.2f} s, "
                f"max {s['max_s']:.2f} s), {s['answered_bytes']} got bytes back")

        open_ok = wait_until(lambda: tf.metric("tlsfront_open_connections") == 0, 15)
        fds_ok = wait_until(lambda: abs(tf.fd_count() - fds0) <= 10, 15)
        m1 = tf.metrics()
        fds1, rss1 = tf.fd_count(), tf.rss_kib()
        health = tf.healthz()
        after = asyncio.run(https_get(tf.port, ctx, "/bytes?n=100000", verify_pattern=True))
        failures = m1.get("tlsfront_tls_handshake_failures_total", 0) - m0.get("tlsfront_tls_handshake_failures_total", 0)
        expected_failures = sum(s["n"] for s in g.values() if s["counted"])
        log(f"  afterwards: /healthz {health}, open_connections {m1.get('tlsfront_open_connections', -1):.0f}, "
            f"fds {fds0} -> {fds1}, RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, "
            f"tls_handshake_failures_total +{failures:.0f} (expected {expected_failures})")

        res.check("mid-request vanishing clients ran", not bad1, "; ".join(map(str, bad1[:3])))
        res.check("mid-response vanishing clients got 1 MB each then left", not bad2, "; ".join(bad2[:3]))
        res.check("HTTP/2 stream cancelled mid-download: the connection goes on serving", not bad3,
                  "; ".join(bad3[:3]))
        for kind, s in g.items():
            if kind == "silent":
                bound = HANDSHAKE_TIMEOUT + 2
            elif kind == "hello-then-nothing":
                bound = HANDSHAKE_TIMEOUT + 2
            else:
                bound = 2.0
            res.check(f"{kind}: all closed by the server within {bound:g} s",
                      s["closed"] == s["n"] and s["max_s"] <= bound,
                      f"{s['closed']}/{s['n']}, max {s['max_s']:.2f} s")
        res.check("hello-then-nothing held until handshake_timeout (not cut early)",
                  g["hello-then-nothing"]["median_s"] >= HANDSHAKE_TIMEOUT - 0.5,
                  f"median {g['hello-then-nothing']['median_s']:.2f} s")
        res.check("plain garbage answered (400 as plain HTTP) or closed", g["plain-garbage"]["closed"] == 50)
        res.check("tlsfront healthy: /healthz 200 and serves a 100 KB GET", tlsfront_ok := (
            health == 200 and after.status == 200 and after.complete and tf.alive()))
        res.check("open_connections back to 0", bool(open_ok), f"{m1.get('tlsfront_open_connections', -1):.0f}")
        res.check("fd count back to baseline +- 10", bool(fds_ok), f"{fds0} -> {fds1}")
        res.check(f"tls_handshake_failures_total counted the {expected_failures} failed handshakes",
                  failures >= expected_failures, f"+{failures:.0f}")
        res.summary = (f"vanished mid-request={n} mid-response={n}; garbage/truncated/stalled handshakes="
                       f"{n}/{n}/{n} all closed (stalled median {g['hello-then-nothing']['median_s']:.1f}s); "
                       f"handshake_failures +{failures:.0f}; fds {fds0}->{fds1}; healthz={health}")
        del tlsfront_ok
    finally:
        tf.stop()
        up.stop()
    return res


if __name__ == "__main__":
    print(run().line())
