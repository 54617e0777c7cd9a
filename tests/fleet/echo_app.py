"""The fleet test's upstream app: says who asked, as the app saw it.

    python tests/fleet/echo_app.py [--port N]

Prints `PORT <n>` once listening on 127.0.0.1, then serves until killed
(HTTP/1.1 keep-alive, one thread per connection: tlsfront pools its
connections to it). Every GET answers 200 with a small JSON body:

    {"xff": X-Forwarded-For, "real_ip": X-Real-IP, "replica": X-Fleet-Replica,
     "peer": the TCP peer (the replica's connection), "path": the path}

X-Fleet-Replica is set by each replica's [headers] set_request, so the
client learns which replica served it; X-Forwarded-For is what tlsfront made
of the PROXY header HAProxy sent. `GET /slow?ms=N` answers after N ms (a
request that is in flight for a while).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fleet-echo"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["0"])[0])
            time.sleep(min(ms, 30_000) / 1000)
        body = json.dumps(
            {
                "xff": self.headers.get("X-Forwarded-For"),
                "real_ip": self.headers.get("X-Real-IP"),
                "replica": self.headers.get("X-Fleet-Replica"),
                "peer": self.client_address[0],
                "path": url.path,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # thousands of requests a second: no access log


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Three replicas opening pooled connections at once (after a restart)
    # must not overflow the listen backlog (the default is 5).
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
