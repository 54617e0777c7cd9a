#!/usr/bin/env python3
"""tlsfront against nginx and HAProxy as TLS-terminating proxies, side by side.

Same upstream (one nginx process), same ECDSA P-256 certificate, same client
cipher (TLS_AES_128_GCM_SHA256, X25519). Every proxy runs with one worker,
pinned to CPU 1; the upstream and the load generators share CPU 0. The proxy's
CPU time is read from /proc, so every rate is also given per proxy core (the
only comparison that means something when the load generator, not the proxy,
is the bottleneck). Targets are interleaved round by round so drift in the
machine's speed hits them alike. Medians of REPS runs.

Scenarios:
  h1   HTTPS HTTP/1.1 keep-alive, 50 connections (wrk): req/s, p99
  h2   HTTP/2, 10 connections x 10 streams (h2load): req/s
  hs   a new connection and full TLS 1.3 handshake per request, 50 at once
       (examples/hsload.rs: no resumption): conn/s
  big  1 MiB responses, 10 connections (wrk): MiB/s
  mem  RSS per idle TLS keep-alive connection, MEM_CONNS held (asyncio): KiB

tlsfront runs with its defaults (forwarded headers, cookie hardening,
redirect rewriting) and the access log off, like the peers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "bench" / "conf"
PROXY_CPU, LOAD_CPU = "1", "0"
UP_PORT = 28180
PORTS = {"nginx": 28443, "haproxy": 28444, "tlsfront": 28445}
TARGETS = ["nginx", "haproxy", "tlsfront"]
HZ = os.sysconf("SC_CLK_TCK")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def install():
    pkgs = ["nginx", "haproxy", "wrk", "nghttp2-client", "valgrind"]
    missing = [p for p in pkgs if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def template(name: str, out: Path, dir_: Path, port: int = 0):
    text = (CONF / name).read_text()
    text = text.replace("@DIR@", str(dir_)).replace("@UP_PORT@", str(UP_PORT)).replace("@PORT@", str(port))
    out.write_text(text)


def family(pid: int) -> list[int]:
    """pid and its child processes (nginx: master + worker)."""
    try:
        return [pid] + [int(p) for p in sh(["pgrep", "-P", str(pid)]).stdout.split()]
    except subprocess.CalledProcessError:
        return [pid]


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process family, in clock ticks."""
    total = 0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pid: int) -> int:
    """Resident memory of the process family, KiB."""
    total = 0
    for p in family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Proxy:
    def __init__(self, name: str, run: Path):
        self.name, self.run, self.port = name, run, PORTS[name]
        self.proc: subprocess.Popen | None = None

    def start(self):
        log = open(self.run / f"{self.name}.log", "a")
        pin = ["taskset", "-c", PROXY_CPU]
        if self.name == "nginx":
            template("nginx.conf", self.run / "nginx.conf", self.run, self.port)
            cmd = pin + ["nginx", "-c", str(self.run / "nginx.conf"), "-p", str(self.run), "-g", "daemon off;"]
        elif self.name == "haproxy":
            template("haproxy.cfg", self.run / "haproxy.cfg", self.run, self.port)
            cmd = pin + ["haproxy", "-f", str(self.run / "haproxy.cfg")]
        else:
            cfg = self.run / "tlsfront.toml"
            cfg.write_text('[log]\naccess = "off"\nlevel = "warn"\n[limits]\nmax_connections = 20000\n')
            cmd = pin + [
                str(ROOT / "target/release/tlsfront"), "run", "-c", str(cfg),
                "--listen", f"127.0.0.1:{self.port}", "--upstream", f"http://127.0.0.1:{UP_PORT}",
                "--cert", str(self.run / "certs/cert.pem"), "--key", str(self.run / "certs/key.pem"),
            ]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        ctx = client_ctx()
        for _ in range(100):
            try:
                import http.client

                c = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=2)
                c.request("GET", "/")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start; see {self.run / (self.name + '.log')}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_env(run: Path) -> dict:
    cnf = run / "client-openssl.cnf"
    if not cnf.exists():
        cnf.write_text(
            "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n[ssl_sect]\n"
            "system_default = sys\n[sys]\nCiphersuites = TLS_AES_128_GCM_SHA256\nGroups = X25519\n"
        )
    return dict(os.environ, OPENSSL_CONF=str(cnf))


UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def wrk_result(out: str) -> dict:
    """Requests/s, p99 (ms, when --latency was given), bytes read and errors of
    a wrk run. Errors are socket errors (connect, read, write, timeout) plus
    responses other than 2xx/3xx; a run that completed no request is one too."""
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m), ([\d.]+)([KMGT]?B) read", out)
    if not done:
        raise ValueError(f"not a wrk report:\n{out}")
    secs = float(done.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[done.group(3)]
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    errors += int(non_2xx.group(1)) if non_2xx else 0
    if int(done.group(1)) == 0:
        errors += 1
    result = {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "bytes_per_sec": float(done.group(4)) * UNITS[done.group(5)] / secs,
        "errors": errors,
    }
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if p99:
        result["p99"] = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    return result


def h2load_result(out: str) -> dict:
    """Requests/s and errors of an h2load run: its "failed" count (which
    includes non-2xx/3xx answers, errors and timeouts) plus requests never done."""
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    total, _, done, _, failed = (int(n) for n in req.groups())
    return {"rate": rate, "errors": failed + (total - done)}


def load(name: str, port: int, scenario: str, secs: int, run: Path) -> dict:
    pin = ["taskset", "-c", LOAD_CPU]
    url = f"https://127.0.0.1:{port}"
    env = client_env(run)
    if scenario == "h1":
        r = wrk_result(sh(pin + ["wrk", "-t1", "-c50", f"-d{secs}s", "--latency", f"{url}/"], env=env).stdout)
        return {"rate": r["rate"], "p99": r["p99"], "errors": r["errors"]}
    if scenario == "h2":
        out = sh(pin + ["h2load", "--tls13-ciphers=TLS_AES_128_GCM_SHA256", "-t1", "-c10", "-m10", "-D", str(secs), f"{url}/"], env=env).stdout
        return h2load_result(out)
    if scenario == "hs":
        out = sh(pin + [str(ROOT / "target/release/examples/hsload"), f"127.0.0.1:{port}", "50", str(secs)]).stdout
        m = re.search(r"handshakes: (\d+) errors: (\d+) seconds: ([\d.]+) rate: ([\d.]+)", out)
        return {"rate": float(m.group(4)), "errors": int(m.group(2))}
    if scenario == "big":
        # MiB/s from the bytes wrk read, not requests x 1 MiB: a cut response
        # must not count as a whole one (and is an error, from its socket).
        r = wrk_result(sh(pin + ["wrk", "-t1", "-c10", f"-d{secs}s", f"{url}/1m"], env=env).stdout)
        return {"rate": r["bytes_per_sec"] / 1048576, "errors": r["errors"]}
    raise ValueError(scenario)


def failed_runs(results: dict) -> list[str]:
    """Every measured run that had errors, as "target scenario: n errors"."""
    return [
        f"{t} {s} (run {i + 1}): {r['errors']} errors"
        for t, by_scenario in results.items()
        for s, runs in by_scenario.items()
        for i, r in enumerate(runs)
        if r.get("errors", 0)
    ]


async def hold(port: int, n: int) -> list:
    ctx = client_ctx()
    conns = []
    sem = asyncio.Semaphore(64)

    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await w.drain()
            data = b""
            while b"hello world" not in data:
                chunk = await r.read(4096)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            conns.append(w)

    await asyncio.gather(*(one() for _ in range(n)))
    return conns


def memory(proxy: Proxy, n: int) -> float:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 1000)), hard))
    worker = proxy.proc.pid
    time.sleep(1)
    before = rss_kib(worker)
    loop = asyncio.new_event_loop()
    conns = loop.run_until_complete(hold(proxy.port, n))
    time.sleep(1)
    after = rss_kib(worker)
    for w in conns:
        w.close()
    loop.run_until_complete(asyncio.sleep(0.2))
    loop.close()
    return (after - before) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--install", action="store_true", help="apt-get install nginx haproxy wrk nghttp2-client valgrind first")
    ap.add_argument("--quick", action="store_true", help="1 x 3 s per scenario, 200 idle connections: a smoke test")
    ap.add_argument("--scenarios", default="h1,h2,hs,big,mem")
    ap.add_argument("--out", default="", help="where to write report.md (default: a temp dir)")
    args = ap.parse_args()
    if args.install:
        install()
    for tool in ["nginx", "haproxy", "wrk", "h2load", "taskset"]:
        if not shutil.which(tool):
            raise SystemExit(f"missing {tool}: run bench/run.sh --install")
    secs, reps, mem_conns = (3, 1, 200) if args.quick else (10, 3, 2000)
    scenarios = args.scenarios.split(",")
    print("building tlsfront and the handshake load generator (release)...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tlsfront", "--example", "hsload"], cwd=ROOT, check=True)

    run = Path(tempfile.mkdtemp(prefix="tlsfront-bench-"))
    sh([str(ROOT / "target/release/tlsfront"), "cert", "--out", str(run / "certs"), "--host", "localhost", "--host", "127.0.0.1"])
    (run / "certs/certkey.pem").write_text((run / "certs/cert.pem").read_text() + (run / "certs/key.pem").read_text())
    (run / "1m.bin").write_bytes(os.urandom(1048576))
    template("upstream.conf", run / "upstream.conf", run)
    upstream = subprocess.Popen(["taskset", "-c", LOAD_CPU, "nginx", "-c", str(run / "upstream.conf"), "-p", str(run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)
    results: dict = {t: {s: [] for s in scenarios} for t in TARGETS}
    warmup_errors: list[str] = []
    started = time.time()
    try:
        for rep in range(reps):
            order = TARGETS[rep % 3:] + TARGETS[: rep % 3]
            for t in order:
                proxy = Proxy(t, run)
                proxy.start()
                try:
                    for s in scenarios:
                        if s == "mem":
                            continue
                        warm = load(t, proxy.port, s, 1, run)
                        if warm["errors"]:
                            warmup_errors.append(f"{t} {s} (warm-up, round {rep + 1}): {warm['errors']} errors")
                        t0 = cpu_ticks(proxy.proc.pid)
                        w0 = time.time()
                        r = load(t, proxy.port, s, secs, run)
                        r["cpu"] = (cpu_ticks(proxy.proc.pid) - t0) / HZ / (time.time() - w0)
                        r["per_core"] = r["rate"] / max(r["cpu"], 0.01)
                        results[t][s].append(r)
                        print(f"[{time.time() - started:5.0f}s] round {rep + 1}/{reps} {t:8} {s:3}: {r['rate']:10.1f}/s "
                              f"proxy cpu {r['cpu']:.2f}, per core {r['per_core']:10.1f}, errors {r['errors']}", flush=True)
                finally:
                    proxy.stop()
                if "mem" in scenarios and rep == 0:
                    proxy = Proxy(t, run)
                    proxy.start()
                    try:
                        kib = memory(proxy, mem_conns)
                    finally:
                        proxy.stop()
                    results[t]["mem"].append({"kib": kib})
                    print(f"[{time.time() - started:5.0f}s] {t:8} mem: {kib:.1f} KiB per idle connection ({mem_conns})", flush=True)
    finally:
        os.killpg(upstream.pid, signal.SIGTERM)

    def med(t, s, key):
        vals = [r[key] for r in results[t][s] if key in r]
        return statistics.median(vals) if vals else float("nan")

    rows = []
    higher = True
    for s, key, label, better in [
        ("h1", "per_core", "HTTPS HTTP/1.1 keep-alive, 50 conns: req/s per proxy core", "higher"),
        ("h1", "p99", "... p99 latency (ms)", "lower"),
        ("h2", "per_core", "HTTP/2, 10 conns x 10 streams: req/s per proxy core", "higher"),
        ("hs", "per_core", "new TLS connection per request, full ECDSA handshake: conn/s per proxy core", "higher"),
        ("big", "per_core", "1 MiB responses: MiB/s per proxy core", "higher"),
        ("mem", "kib", f"RSS per idle TLS keep-alive connection (KiB, {mem_conns} conns)", "lower"),
    ]:
        if s not in scenarios:
            continue
        vals = {t: med(t, s, key) for t in TARGETS}
        peers = [vals["nginx"], vals["haproxy"]]
        best = max(peers) if better == "higher" else min(peers)
        ratio = lambda a, b: a / b if b else float("nan")
        rows.append((label, vals, ratio(vals["tlsfront"], vals["nginx"]), ratio(vals["tlsfront"], vals["haproxy"]),
                     ratio(vals["tlsfront"], best), better))
    fmt = lambda v: f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    lines = [
        f"tlsfront benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {platform.machine()}, "
        f"{os.cpu_count()} cores ({cpu_model()}), proxy on CPU {PROXY_CPU}, load + upstream on CPU {LOAD_CPU}; "
        f"median of {reps} x {secs} s; {versions()}",
        "",
        "| scenario | nginx | HAProxy | tlsfront | tlsfront / nginx | tlsfront / HAProxy | vs best peer |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, vals, rn, rh, rb, better in rows:
        note = "" if better == "higher" else " (lower is better)"
        lines.append(f"| {label}{note} | {fmt(vals['nginx'])} | {fmt(vals['haproxy'])} | {fmt(vals['tlsfront'])} | "
                     f"{rn:.2f}x | {rh:.2f}x | {rb:.2f}x |")
    failures = warmup_errors + failed_runs(results)
    if failures:
        lines += ["", "**Not valid: requests failed during the run** (" + "; ".join(failures) + ")"]
    report = "\n".join(lines)
    print("\n" + report)
    out = Path(args.out) if args.out else run
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report + "\n")
    print(f"\nreport: {out / 'report.md'}; raw logs: {run}; took {time.time() - started:.0f} s")
    if failures:
        # Rates measured while requests fail are not comparable: the run fails.
        print("\nFAILED: runs with errors:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def versions() -> str:
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split()[2]
    return f"nginx {nginx}, HAProxy {haproxy}, tlsfront {ROOT.name and sh([str(ROOT / 'target/release/tlsfront'), '--version']).stdout.split()[-1]}"


if __name__ == "__main__":
    sys.exit(main())
