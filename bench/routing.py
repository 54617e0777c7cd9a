#!/usr/bin/env python3
"""Per-request cost of routing: tlsfront with 50 `[[route]]` tables against
tlsfront with a single `[upstream]`, in instructions per request counted by
callgrind (repeatable on a busy machine, unlike req/s).

The whole tlsfront process runs under callgrind: TLS, HTTP/1.1 parsing, the
header policy, the route match, the upstream pool, the response. One client
sends N requests, one after the other, on one keep-alive TLS connection to
`https://localhost/` (a GET, 100-byte answer with a Set-Cookie, as bench.py's
upstream); the upstream is a small Python HTTP/1.1 server, not counted.
Instructions per request = (I(N2) - I(N1)) / (N2 - N1), so start-up,
the TLS handshake and shutdown cancel out.

Configurations:
  upstream   `--upstream` only: no route table (the code path from before routes)
  1 route    one `[[route]]` with path = "/"
  50 routes  40 exact hosts, 5 wildcard hosts, 4 path prefixes and "/", the
             request taken by the last in matching order ("/" on any host),
             i.e. every other route is tried first: the worst case.

usage: bench/routing.py [N1 N2 REPS]     (needs target/release/tlsfront, valgrind)
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "release" / "tlsfront"
BODY = b"hello world " + b"x" * 88


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def routes_toml(n: int, upstream: str) -> str:
    if n == 0:
        return ""
    if n == 1:
        return f'[[route]]\npath = "/"\nurl = "{upstream}"\n'
    out = []
    for i in range(40):
        out.append(f'[[route]]\nhost = "site{i}.example.com"\nurl = "{upstream}"\n')
    for i in range(5):
        out.append(f'[[route]]\nhost = "*.w{i}.example.com"\nurl = "{upstream}"\n')
    for i in range(4):
        out.append(f'[[route]]\npath = "/p{i}"\nurl = "{upstream}"\n')
    out.append(f'[[route]]\npath = "/"\nurl = "{upstream}"\n')
    assert len(out) == n == 50
    return "".join(out)


def instructions(routes: int, requests: int, upstream: str, certs: Path, work: Path) -> int:
    port = free_port()
    cfg = work / f"tlsfront-{routes}.toml"
    cfg.write_text('[log]\naccess = "off"\nlevel = "warn"\n' + routes_toml(routes, upstream))
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        str(BIN), "run", "-c", str(cfg), "--listen", f"127.0.0.1:{port}",
        "--cert", str(certs / "cert.pem"), "--key", str(certs / "key.pem"),
    ]
    if routes == 0:
        cmd += ["--upstream", upstream]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
                conn.connect()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"tlsfront did not start: {proc.stderr.read() if proc.poll() is not None else ''}")
                time.sleep(0.2)
        for _ in range(requests):
            conn.request("GET", "/")
            resp = conn.getresponse()
            if resp.status != 200 or resp.read() != BODY:
                raise SystemExit(f"unexpected answer {resp.status} with {routes} routes")
        conn.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    m = re.search(r"Collected : (\d+)", err)
    if not m:
        raise SystemExit(f"no callgrind total in:\n{err[-2000:]}")
    return int(m.group(1))


def main() -> None:
    n1, n2, reps = (int(a) for a in (sys.argv[1:4] if len(sys.argv) >= 4 else ("200", "1200", "2")))
    if not BIN.is_file():
        raise SystemExit(f"{BIN} missing: cargo build --release")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="tlsfront-routing-") as tmp:
        work = Path(tmp)
        subprocess.run([str(BIN), "cert", "--out", str(work / "certs")], check=True, capture_output=True)
        results: dict[str, list[float]] = {}
        for rep in range(reps):
            for name, routes in (("upstream", 0), ("1 route", 1), ("50 routes", 50)):
                a = instructions(routes, n1, upstream, work / "certs", work)
                b = instructions(routes, n2, upstream, work / "certs", work)
                per = (b - a) / (n2 - n1)
                results.setdefault(name, []).append(per)
                print(f"rep {rep + 1}: {name:>9}: {per:,.0f} instructions/request", flush=True)
    base = min(results["upstream"])
    print(f"\n| configuration | instructions per request (min of {reps}) | vs upstream |")
    print("|---|---:|---:|")
    for name, values in results.items():
        v = min(values)
        print(f"| {name} | {v:,.0f} | {100 * (v - base) / base:+.2f} % |")
    server.shutdown()


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
