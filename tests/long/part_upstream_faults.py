"""Part 4: upstream faults (response_timeout = "2s").

(a) refused (nothing listening)            -> 502
(b) resets mid-body (Content-Length 1,000,000, 1000 bytes, then RST; also a
    clean FIN and a chunked variant)       -> the client never gets a complete
    200 body, over HTTP/1.1 and HTTP/2: report what it saw
(c) hangs without answering                -> 504 after response_timeout
(d) answers garbage bytes                  -> 502
(e) keep-alive connections the pool holds are closed by the app (one request
    per connection, closed 50 ms later): 200 GETs spaced so the pool holds
    stale connections -> zero client-visible errors; and 200 GETs sent while
    the app is closing (the keep-alive race: the app drops requests that
    arrive on a connection it is closing) -> zero client-visible errors too,
    and the app must have dropped some (else the race was not exercised).
    tlsfront sends a request again, once, on a fresh connection when a pooled
    connection closed before any byte of the response and the request was
    never written or is idempotent without a body (src/upstream/mod.rs,
    `exchange`): a GET the app dropped is replayed and answered.
(f) the app is killed and restarted every 2 s while 4 clients do requests for
    15 s: every response is 200 with a full, correct body, or 502/503/504, or
    a body visibly cut (never a hang, never a truncated body that looks complete)
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PATTERN, Result, Tlsfront, Upstream, client_context, close_writer, free_port, https_get, log, open_tls,
    percentile, raise_fd_limit, read_response, read_text, request_bytes,
)
from h2client import h2_request  # noqa: E402

RESPONSE_TIMEOUT = 2.0


def front(name: str, upstream_url: str, **upstream_keys) -> Tlsfront:
    return Tlsfront(name, upstream_url, {"upstream": {"response_timeout": f"{RESPONSE_TIMEOUT:g}s",
                                                      "connect_timeout": "2s", **upstream_keys}}).start()


async def timed(coro) -> tuple[object, float]:
    t = time.monotonic()
    try:
        r = await coro
    except Exception as e:  # noqa: BLE001
        r = e
    return r, time.monotonic() - t


def describe(r) -> str:
    if isinstance(r, Exception):
        return f"no response ({type(r).__name__}: {r})"
    s = f"{r.status}, {r.length} body bytes"
    if r.header("content-length"):
        s += f" of {r.header('content-length')} announced"
    s += ", complete" if r.complete else f", cut: {r.error}"
    return s


def simple_status_case(res: Result, label: str, mode: str | None, expect: int, n: int,
                       min_s: float = 0.0, max_s: float = 1.0) -> str:
    up = Upstream(mode, name=f"uf-{mode}").start() if mode else None
    url = up.url if up else f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tf = front(f"upstream-{label}", url)
    try:
        async def go():
            return await asyncio.gather(*[timed(https_get(tf.port, client_context(), "/x", timeout=10))
                                          for _ in range(n)])
        results = asyncio.run(go())
        statuses = Counter(r.status if not isinstance(r, Exception) else type(r).__name__ for r, _ in results)
        times = [t for _, t in results]
        ok = all(not isinstance(r, Exception) and r.status == expect and r.complete and min_s <= t <= max_s
                 for r, t in results)
        body = next((r.body.decode(errors="replace").strip() for r, _ in results if not isinstance(r, Exception)), "")
        log(f"  ({label}) {n} GETs: statuses {dict(statuses)}, {min(times):.2f}-{max(times):.2f} s; body: {body!r}")
        res.check(f"({label}) -> {expect} in {min_s:g}-{max_s:g} s", ok,
                  f"{dict(statuses)} in {min(times):.2f}-{max(times):.2f} s")
        return f"{label}:{'/'.join(map(str, statuses))}@{percentile(times, 50):.2f}s"
    finally:
        tf.stop()
        if up:
            up.stop()


def truncation_case(res: Result, n: int) -> str:
    seen = []
    for mode in ("reset", "fin", "chunked-reset"):
        up = Upstream(mode, name=f"uf-{mode}").start()
        tf = front(f"upstream-{mode}", up.url)
        try:
            async def go():
                h1 = [await timed(https_get(tf.port, client_context(["http/1.1"]), "/big", timeout=10))
                      for _ in range(n)]
                h2 = [await timed(h2_request(tf.port, "/big", timeout=10)) for _ in range(n)]
                return h1, h2
            h1, h2 = asyncio.run(go())
            for proto, results in (("HTTP/1.1", h1), ("HTTP/2", h2)):
                looks_complete = [r for r, _ in results
                                  if not isinstance(r, Exception) and r.status == 200 and r.complete]
                kinds = Counter(describe(r).split(", cut:")[0] + (", cut" if not isinstance(r, Exception)
                                                                   and not r.complete else "")
                                for r, _ in results)
                sample = describe(results[0][0])
                log(f"  (b) upstream {mode}, {proto}: {n} GETs, client saw: {dict(kinds)}; e.g. {sample}")
                res.check(f"(b) upstream {mode} mid-body, {proto}: no complete 200 body", not looks_complete,
                          f"{len(looks_complete)}/{n} looked complete")
                seen.append(f"{mode}/{proto.replace('HTTP/', 'h')}:{'cut' if not looks_complete else 'COMPLETE!'}")
        finally:
            tf.stop()
            up.stop()
    return " ".join(seen)


def stale_pool_case(res: Result, n: int) -> str:
    up = Upstream("oneshot", name="uf-oneshot", extra=["--idle-ms", "50"]).start()
    tf = front("upstream-oneshot", up.url)
    out = []
    try:
        ctx = client_context(["http/1.1"])

        async def phase(spacing: tuple[float, float]) -> list:
            # One keep-alive client connection; tlsfront's pool decides which
            # upstream connection carries each request.
            reader, writer = await open_tls(tf.port, ctx)
            results = []
            for _ in range(n):
                await asyncio.sleep(random.uniform(*spacing))
                try:
                    writer.write(request_bytes("GET", "/"))
                    r = await asyncio.wait_for(read_response(reader), 10)
                    results.append(r.status if r.complete else f"{r.status} cut")
                    if not r.keep_alive:
                        await close_writer(writer)
                        reader, writer = await open_tls(tf.port, ctx)
                except Exception as e:  # noqa: BLE001
                    results.append(type(e).__name__)
                    await close_writer(writer, abort=True)
                    reader, writer = await open_tls(tf.port, ctx)
            await close_writer(writer)
            return results

        for label, spacing, racing in (("stale (GETs 60-150 ms apart: the app closed the pooled connection before "
                                        "it is reused)", (0.06, 0.15), False),
                                       ("racing (GETs 0-60 ms apart: sent while the app is about to close)",
                                        (0.0, 0.06), True)):
            dropped0 = read_text(up.logfile).count("DROPPED")
            results = asyncio.run(phase(spacing))
            time.sleep(0.2)
            dropped = read_text(up.logfile).count("DROPPED") - dropped0
            c = Counter(results)
            errors = n - c.get(200, 0)
            log(f"  (e) {label}: {n} GETs -> {dict(c)}; the app dropped {dropped} requests unanswered "
                f"(each one a GET tlsfront had to send again on a new connection)")
            if not racing:
                res.check("(e) stale pooled connections: zero client-visible errors", errors == 0,
                          f"{errors}/{n} errors: {dict(c)}")
                out.append(f"stale:{errors}/{n}err")
            else:
                # A GET the app dropped reached the client as a 200 only if
                # tlsfront replayed it on a fresh connection: any 502, cut
                # body or client-side error here is a missing replay.
                res.check("(e) keep-alive race: zero client-visible errors (dropped GETs replayed on a fresh "
                          "connection)", errors == 0, f"{errors}/{n} errors: {dict(c)}; {dropped} dropped by the app")
                res.check("(e) keep-alive race exercised: the app dropped requests on connections it was closing",
                          dropped > 0, f"{dropped} dropped of {n}")
                out.append(f"racing:{errors}/{n}err({dropped} dropped by app)")
    finally:
        tf.stop()
        up.stop()
    return " ".join(out)


def restart_case(res: Result, seconds: float, workers: int) -> str:
    port = free_port()
    up = Upstream("ok", port=port, name="uf-restart").start()
    tf = front("upstream-restart", up.url)
    stop = threading.Event()
    restarts = [0]
    current = [up]

    def killer():
        while not stop.wait(2.0):
            current[0].kill()
            try:
                current[0] = Upstream("ok", port=port, name="uf-restart").start()
                restarts[0] += 1
            except RuntimeError as e:
                log(f"  (f) restart failed: {e}")

    size = 256 * 1024
    outcomes: Counter = Counter()
    bad: list[str] = []
    latencies: list[float] = []

    async def worker(w: int, deadline: float):
        ctx = client_context(["http/1.1"])
        i = 0
        while time.monotonic() < deadline:
            i += 1
            upload = (w + i) % 4 == 0
            t = time.monotonic()
            try:
                if upload:
                    body = PATTERN[: 32 * 1024]
                    reader, writer = await open_tls(tf.port, ctx, 10)
                    try:
                        writer.write(request_bytes("POST", "/upload", {"Connection": "close"}, body))
                        r = await asyncio.wait_for(read_response(reader), 10)
                    finally:
                        await close_writer(writer)
                    full_ok = r.status == 200 and r.complete and r.body == b'{"bytes": 32768}'
                else:
                    # Mostly 256 KiB, sometimes 4 MiB (likelier to be cut by a kill mid-body).
                    n = size * 16 if i % 5 == 0 else size
                    r = await https_get(tf.port, ctx, f"/bytes?n={n}", timeout=10, keep_body=False,
                                        verify_pattern=True)
                    full_ok = r.status == 200 and r.complete and r.length == n
            except asyncio.TimeoutError:
                outcomes["hang (10 s client timeout)"] += 1
                bad.append("hang")
                continue
            except Exception as e:  # noqa: BLE001
                outcomes[f"no response: {type(e).__name__}"] += 1
                bad.append(f"{type(e).__name__}: {e}")
                continue
            finally:
                latencies.append(time.monotonic() - t)
            if full_ok:
                outcomes["200 full"] += 1
            elif r.status in (502, 503, 504) and r.complete:
                outcomes[str(r.status)] += 1
            elif r.status == 200 and not r.complete:
                outcomes["200 cut (detected)"] += 1
            else:
                outcomes[f"BAD {r.status} complete={r.complete} len={r.length}"] += 1
                bad.append(describe(r))

    async def go():
        deadline = time.monotonic() + seconds
        await asyncio.gather(*[worker(w, deadline) for w in range(workers)])

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        asyncio.run(go())
    finally:
        stop.set()
        th.join(timeout=10)
        healthy = tf.healthz() == 200 and tf.alive()
        tf.stop()
        current[0].stop()
    total = sum(outcomes.values())
    log(f"  (f) app killed and restarted {restarts[0]} times in {seconds:g} s; {total} requests: {dict(outcomes)}; "
        f"max latency {max(latencies, default=0):.2f} s")
    res.check("(f) restarts under load: only 200-full / 502 / 503 / 504 / visibly cut, no hang", not bad,
              "; ".join(bad[:3]))
    res.check("(f) some requests succeeded and the app was restarted", outcomes["200 full"] > 0 and restarts[0] >= 3,
              f"{outcomes['200 full']} ok, {restarts[0]} restarts")
    res.check("(f) tlsfront healthy afterwards", healthy)
    return (f"restart: {total} reqs, {outcomes['200 full']} ok, "
            f"{sum(v for k, v in outcomes.items() if k[:3] in ('502', '503', '504'))} 5xx, "
            f"{outcomes['200 cut (detected)']} cut, {len(bad)} bad")


def run() -> Result:
    res = Result("upstream-faults")
    raise_fd_limit()
    n = int(os.environ.get("UPSTREAM_N", "200"))
    parts = []
    log("upstream-faults:")
    parts.append(simple_status_case(res, "a-refused", None, 502, 20, 0.0, 1.0))
    parts.append(truncation_case(res, 10))
    parts.append(simple_status_case(res, "c-hang", "hang", 504, 10, RESPONSE_TIMEOUT - 0.1, RESPONSE_TIMEOUT + 1.0))
    parts.append(simple_status_case(res, "d-garbage", "garbage", 502, 20, 0.0, 1.0))
    parts.append(stale_pool_case(res, n))
    parts.append(restart_case(res, float(os.environ.get("RESTART_SECONDS", "15")), 4))
    res.summary = "; ".join(parts)
    return res


if __name__ == "__main__":
    print(run().line())
