"""Part 6: soak.

SOAK_SECONDS (600) of mixed load against tlsfront in front of the Flask demo
app (tests/long/soak_app.py: docker/demo-app/app.py plus an /upload route)
served by gunicorn's threaded worker (the Flask development server when
gunicorn is not installed):

  - HTTP/1.1 GETs (/healthz, /login, /whoami) on keep-alive connections,
    checked for status and body;
  - HTTP/2 GETs: h2load in bounded bursts (nghttp2-client), every request
    must succeed; plus our own HTTP/2 client checking bodies;
  - WebSocket echo sessions on /ws (websocket-client), every echo checked;
  - uploads: POST 1 MiB to /upload, the app's byte count and SHA-256 checked;
  - SIGHUP to tlsfront every 10 s (config and certificate reload).

Pass: zero failed requests of any kind, every reload succeeded, end RSS <=
start RSS * 1.5 + 10 MiB (start measured after a warm-up, end measured under
the same load), and no fd leak. The fds are compared once the load has
stopped and its connections have closed (open_connections metric 0 and no
client socket left, waited for up to 30 s), not under load: there, an h2load
burst in flight holds a few dozen client and app connections that are gone a
moment later (a check under load failed 18 -> 52 with no growth in the
samples). tlsfront's fds are told apart by kind (client connections, its
connections to the app, the rest): the rest must be within start + 20, and
the idle app connections tlsfront's pool keeps (the app's keep-alive or a
reload ends them; not a leak) within `upstream.pool_max_idle` (64).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import websocket  # websocket-client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    HERE, HOST, REPO, Result, Tlsfront, certs, client_context, close_writer, free_port, log, open_tls,
    raise_fd_limit, read_response, request_bytes, wait_until, workdir,
)
from h2client import h2_request  # noqa: E402

WARMUP = 15.0
# upstream.pool_max_idle (tlsfront's default; the soak config leaves it).
POOL_MAX_IDLE = 64
# Bound on how long the load's connections may take to close once it stopped.
SETTLE_SECONDS = 30.0


class Stats:
    def __init__(self):
        self.ok: Counter = Counter()
        self.failed: Counter = Counter()
        self.examples: list[str] = []
        self.lock = threading.Lock()

    def good(self, kind: str, n: int = 1):
        with self.lock:
            self.ok[kind] += n

    def bad(self, kind: str, why: str, n: int = 1):
        with self.lock:
            self.failed[kind] += n
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {why}")
        log(f"  FAILURE {kind}: {why}")


def start_app(port: int, logfile: Path) -> tuple[subprocess.Popen, str]:
    venv_bin = Path(sys.executable).parent
    gunicorn = venv_bin / "gunicorn"
    if not gunicorn.exists() and shutil.which("gunicorn"):
        gunicorn = Path(shutil.which("gunicorn"))
    keepalive = os.environ.get("SOAK_GUNICORN_KEEPALIVE", "75")
    if gunicorn.exists():
        # As docker/demo-app/Dockerfile runs it: one threaded worker, keep-alive
        # longer than tlsfront's pool_idle_timeout.
        cmd = [str(gunicorn), "--chdir", str(HERE), "-b", f"{HOST}:{port}", "--workers", "1", "--threads", "16",
               "--keep-alive", keepalive, "--no-control-socket", "soak_app:app"]
        server = f"gunicorn (1 worker, 16 threads, keep-alive {keepalive}s)"
    else:
        cmd = [sys.executable, str(HERE / "soak_app.py")]
        server = "Flask development server (gunicorn not installed)"
    logf = open(logfile, "ab")
    proc = subprocess.Popen(cmd, cwd=str(HERE), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PORT=str(port), HOST=HOST, PYTHONUNBUFFERED="1"))
    logf.close()
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def up():
        try:
            with opener.open(f"http://{HOST}:{port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    if proc.poll() is None and wait_until(up, 20):
        return proc, server
    proc.kill()
    raise RuntimeError(f"the soak app did not start: {logfile.read_text()[-2000:]}")


# ------------------------------------------------------------------ load


H1_PATHS = [("/healthz", lambda r: r.body == b"ok"),
            ("/login", lambda r: b"Log in" in r.body),
            ("/whoami", lambda r: json.loads(r.body)["scheme"] == "https")]


async def h1_worker(tf: Tlsfront, stats: Stats, stop: asyncio.Event, pause: float):
    ctx = client_context(["http/1.1"])
    reader = writer = None
    i = 0
    while not stop.is_set():
        path, check = H1_PATHS[i % len(H1_PATHS)]
        i += 1
        try:
            if writer is None:
                reader, writer = await open_tls(tf.port, ctx)
            writer.write(request_bytes("GET", path))
            r = await asyncio.wait_for(read_response(reader), 10)
            if r.status == 200 and r.complete and check(r):
                stats.good("http/1.1 GET")
            else:
                stats.bad("http/1.1 GET", f"{path}: {r.status} complete={r.complete} {r.error} {r.body[:80]!r}")
            if not r.keep_alive or not r.complete:
                await close_writer(writer)
                writer = None
        except Exception as e:  # noqa: BLE001
            stats.bad("http/1.1 GET", f"{path}: {type(e).__name__}: {e}")
            if writer is not None:
                await close_writer(writer, abort=True)
            writer = None
        await asyncio.sleep(pause)
    if writer is not None:
        await close_writer(writer)


async def h2_checked_worker(tf: Tlsfront, stats: Stats, stop: asyncio.Event, pause: float):
    while not stop.is_set():
        try:
            r = await h2_request(tf.port, "/whoami", timeout=10)
            if r.status == 200 and r.complete and json.loads(r.body)["scheme"] == "https":
                stats.good("http/2 GET (checked)")
            else:
                stats.bad("http/2 GET (checked)", f"{r.status} complete={r.complete} {r.error}")
        except Exception as e:  # noqa: BLE001
            stats.bad("http/2 GET (checked)", f"{type(e).__name__}: {e}")
        await asyncio.sleep(pause)


H2LOAD_RE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout")
STATUS_RE = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


async def h2load_bursts(tf: Tlsfront, stats: Stats, stop: asyncio.Event, every: float, n: int):
    exe = shutil.which("h2load")
    if not exe:
        stats.bad("http/2 GET (h2load)", "h2load not installed (tests/long/run.sh installs nghttp2-client)")
        return
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            exe, "-n", str(n), "-c", "4", "-m", "8", "-t", "1", "-T", "20", "-N", "20",
            f"https://{HOST}:{tf.port}/healthz",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            stats.bad("http/2 GET (h2load)", "h2load burst did not finish within 60 s")
            continue
        text = out.decode(errors="replace")
        m, s = H2LOAD_RE.search(text), STATUS_RE.search(text)
        if not m or not s or "Application protocol: h2" not in text:
            stats.bad("http/2 GET (h2load)", f"unparsable h2load output: {text[-300:]!r}")
        else:
            total, _, done, succeeded, failed, errored, timeout = map(int, m.groups())
            two = int(s.group(1))
            good = min(succeeded, two)
            stats.good("http/2 GET (h2load)", good)
            if good != total or failed or errored or timeout:
                stats.bad("http/2 GET (h2load)", f"burst: {m.group(0)}; {s.group(0)}", n=total - good)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def upload_worker(tf: Tlsfront, stats: Stats, stop: asyncio.Event, pause: float):
    ctx = client_context(["http/1.1"])
    size = 1 << 20
    while not stop.is_set():
        body = os.urandom(size)
        want = hashlib.sha256(body).hexdigest()
        try:
            reader, writer = await open_tls(tf.port, ctx)
            try:
                writer.write(request_bytes("POST", "/upload", {"Content-Type": "application/octet-stream",
                                                               "Connection": "close"}, body))
                r = await asyncio.wait_for(read_response(reader), 30)
            finally:
                await close_writer(writer)
            got = json.loads(r.body) if r.status == 200 and r.complete else {}
            if got.get("bytes") == size and got.get("sha256") == want:
                stats.good("upload 1 MiB")
            else:
                stats.bad("upload 1 MiB", f"{r.status} complete={r.complete} {r.body[:120]!r}")
        except Exception as e:  # noqa: BLE001
            stats.bad("upload 1 MiB", f"{type(e).__name__}: {e}")
        await asyncio.sleep(pause)


def ws_worker(tf: Tlsfront, stats: Stats, stop: threading.Event, messages: int, pause: float):
    sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(certs() / "ca.pem")}
    while not stop.is_set():
        try:
            ws = websocket.create_connection(f"wss://{HOST}:{tf.port}/ws", sslopt=sslopt, timeout=10)
            try:
                for i in range(messages):
                    if i % 2:
                        msg = os.urandom(1 + i * 97 % 4000)
                        ws.send_binary(msg)
                    else:
                        msg = f"soak message {i} " + "x" * (i * 31 % 2000)
                        ws.send(msg)
                    echo = ws.recv()
                    if echo != msg:
                        raise ValueError(f"echo mismatch on message {i}")
                ws.close()
            finally:
                ws.shutdown()
            stats.good("websocket session")
            stats.good("websocket message", messages)
        except Exception as e:  # noqa: BLE001
            stats.bad("websocket session", f"{type(e).__name__}: {e}")
        stop.wait(pause)


# ------------------------------------------------------------------ part


def kinds_text(k: dict | None) -> str:
    if not k:
        return "?"
    return f"{k['client']} client, {k['upstream']} app, {k['other']} other"


def run() -> Result:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    res = Result("soak")
    raise_fd_limit()
    wd = workdir("soak")
    app_port = free_port()
    app, server = start_app(app_port, wd / "app.log")
    tf = Tlsfront("soak", f"http://{HOST}:{app_port}", {"log": {"access": "common"}},
                  stdout_devnull=True).start()
    stats = Stats()
    samples = []  # (t, rss KiB, fds, client sockets, app sockets)
    reloads = [0]
    try:
        log(f"soak: {seconds:g} s of mixed load through tlsfront to the demo app under {server}; "
            f"SIGHUP every 10 s")
        m0 = tf.metrics()
        start = {}

        async def main():
            stop = asyncio.Event()
            tstop = threading.Event()
            ws_threads = [threading.Thread(target=ws_worker, args=(tf, stats, tstop, 20, 0.2), daemon=True)
                          for _ in range(2)]
            for t in ws_threads:
                t.start()
            tasks = [asyncio.create_task(h1_worker(tf, stats, stop, 0.01)) for _ in range(2)]
            tasks.append(asyncio.create_task(h2_checked_worker(tf, stats, stop, 0.05)))
            tasks.append(asyncio.create_task(h2load_bursts(tf, stats, stop, 15, 2000)))
            tasks.append(asyncio.create_task(upload_worker(tf, stats, stop, 0.25)))
            t0 = time.monotonic()
            next_hup = t0 + 10
            next_sample = t0
            next_report = t0 + 60
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(0.5)
                now = time.monotonic()
                if now >= next_hup:
                    tf.sighup()
                    reloads[0] += 1
                    next_hup += 10
                if now >= next_sample:
                    k = tf.fd_kinds(app_port)
                    samples.append((now - t0, tf.rss_kib(), k["total"], k["client"], k["upstream"]))
                    next_sample += 5
                if not start and now - t0 >= min(WARMUP, seconds / 4):
                    start.update(t=now - t0, rss=tf.rss_kib(), kinds=tf.fd_kinds(app_port))
                    start["fds"] = start["kinds"]["total"]
                    log(f"  start (after {start['t']:.0f} s warm-up): RSS {start['rss'] / 1024:.1f} MiB, "
                        f"{start['fds']} fds ({kinds_text(start['kinds'])})")
                if now >= next_report:
                    next_report += 60
                    log(f"  t={now - t0:.0f}s: {sum(stats.ok.values())} ok, {sum(stats.failed.values())} failed, "
                        f"RSS {tf.rss_kib() / 1024:.1f} MiB, {tf.fd_count()} fds, {reloads[0]} SIGHUPs")
                if not tf.alive():
                    stats.bad("tlsfront", f"exited with {tf.proc.returncode}")
                    break
            end = {"rss": tf.rss_kib(), "kinds": tf.fd_kinds(app_port), "t": time.monotonic() - t0}
            end["fds"] = end["kinds"]["total"]
            stop.set()
            tstop.set()
            await asyncio.gather(*tasks)
            for t in ws_threads:
                t.join(timeout=20)
            return end

        end = asyncio.run(main())
        time.sleep(1.5)  # the last SIGHUP's reload is logged
        m1 = tf.metrics()
        # Every load task has ended (h2load's last burst included): wait,
        # bounded, until tlsfront has closed the load's connections.
        t_settle = time.monotonic()
        settled = wait_until(lambda: tf.metric("tlsfront_open_connections") == 0
                             and tf.fd_kinds(app_port)["client"] == 0, SETTLE_SECONDS)
        settle_s = time.monotonic() - t_settle
        after = {"rss": tf.rss_kib(), "kinds": tf.fd_kinds(app_port),
                 "open": tf.metric("tlsfront_open_connections")}
        after["fds"] = after["kinds"]["total"]
        reload_ok = m1.get("tlsfront_config_reloads_total", 0) - m0.get("tlsfront_config_reloads_total", 0)
        reload_bad = (m1.get("tlsfront_config_reload_failures_total", 0)
                      - m0.get("tlsfront_config_reload_failures_total", 0))
        five_xx = m1.get('tlsfront_requests_total{class="5xx"}', 0)
        total_ok = sum(stats.ok.values())
        total_bad = sum(stats.failed.values())
        for kind in sorted(set(stats.ok) | set(stats.failed)):
            log(f"  {kind}: {stats.ok[kind]} ok, {stats.failed[kind]} failed")
        peak = max((s[1] for s in samples), default=0)
        log(f"  tlsfront RSS start {start.get('rss', 0) / 1024:.1f} MiB -> end {end['rss'] / 1024:.1f} MiB "
            f"(peak {peak / 1024:.1f} MiB, after the load stopped {after['rss'] / 1024:.1f} MiB); fds start "
            f"{start.get('fds')} ({kinds_text(start.get('kinds'))}) -> end, under load, {end['fds']} "
            f"({kinds_text(end['kinds'])}) -> after the load's connections closed ({settle_s:.1f} s) "
            f"{after['fds']} ({kinds_text(after['kinds'])}); SIGHUPs {reloads[0]}, reloads "
            f"+{reload_ok:.0f}, reload failures +{reload_bad:.0f}; 5xx answered by tlsfront {five_xx:.0f}")
        (wd / "samples.tsv").write_text("t_s\trss_kib\tfds\tclient_sockets\tapp_sockets\n"
                                        + "".join("\t".join(map(str, (f"{x[0]:.1f}", *x[1:]))) + "\n"
                                                  for x in samples))
        res.check("zero failed requests", total_bad == 0, "; ".join(stats.examples[:5]))
        res.check("every request type ran", all(stats.ok[k] > 0 for k in (
            "http/1.1 GET", "http/2 GET (h2load)", "http/2 GET (checked)", "websocket session", "upload 1 MiB")),
            ", ".join(f"{k}={v}" for k, v in stats.ok.items()))
        res.check("every SIGHUP reloaded, none failed", reload_ok >= reloads[0] and reload_bad == 0 and reloads[0] > 0,
                  f"{reloads[0]} SIGHUPs, +{reload_ok:.0f} reloads, +{reload_bad:.0f} failures")
        rss_limit = start.get("rss", 0) * 1.5 + 10 * 1024
        res.check("RSS: end <= start * 1.5 + 10 MiB", end["rss"] <= rss_limit,
                  f"{start.get('rss', 0) / 1024:.1f} -> {end['rss'] / 1024:.1f} MiB (limit {rss_limit / 1024:.1f})")
        sk, ak = start.get("kinds") or {"client": 0, "upstream": 0, "other": 0, "total": 0}, after["kinds"]
        res.check(f"the load's connections closed after it (open_connections 0, no client socket; within "
                  f"{SETTLE_SECONDS:g} s)", bool(settled) and ak["client"] == 0 and after["open"] == 0,
                  f"after {settle_s:.1f} s: open_connections {after['open']:.0f}, {ak['client']} client sockets")
        # Everything but the connections (client and app sockets) must be back.
        res.check("fds after the load, connections aside: <= start + 20",
                  ak["other"] <= sk["other"] + 20, f"{sk['other']} -> {ak['other']} "
                  f"(start {kinds_text(sk)}; after {kinds_text(ak)})")
        res.check(f"idle app connections kept after the load <= pool_max_idle ({POOL_MAX_IDLE})",
                  ak["upstream"] <= POOL_MAX_IDLE, f"{ak['upstream']} app sockets")
        res.check("tlsfront healthy at the end", tf.alive() and tf.healthz() == 200)
        res.summary = (f"{seconds:g}s via {server.split(' ')[0]}: {total_ok} ok / {total_bad} failed ("
                       + ", ".join(f"{k}={v}" for k, v in sorted(stats.ok.items()))
                       + f"); SIGHUPs={reloads[0]}; RSS {start.get('rss', 0) / 1024:.1f}->{end['rss'] / 1024:.1f}MiB; "
                       f"fds {start.get('fds')}->{after['fds']} after the load "
                       f"(other {(start.get('kinds') or {}).get('other')}->{after['kinds']['other']}, "
                       f"app pool {after['kinds']['upstream']})")
    finally:
        tf.stop()
        app.terminate()
        try:
            app.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait(timeout=5)
    return res


if __name__ == "__main__":
    print(run().line())
