"""A small app with one quirk per route, for the `tlsfront doctor` findings
that the framework sample apps never trigger. Standard library only.

    PORT=5004 python quirks_app.py      (listens on 127.0.0.1 only)

Routes (GET; every cookie is Secure, HttpOnly, SameSite=Lax unless noted,
so a route triggers only the finding it is for):

    /healthz             "ok"
    /cookie?len=N        one Set-Cookie header of exactly N bytes (cookie_too_large above 4096)
    /cookies?n=N         N distinct cookies (too_many_cookies above 50)
    /dup                 pref with Path=/ and again with Path=/dup (duplicate_cookie)
    /slow?ms=N           the response head after N ms (upstream_slow above 1000)
    /http10              an HTTP/1.0 response without keep-alive (upstream_http10)
    /space-redirect      302 with `Location: /a b` (a space, as some apps send it)
    /a%20b               200 "landed"
    /latin1-cookie       Set-Cookie: sid=caf\\xe9 (a byte that is not UTF-8)
    /reflect             echoes X-Forwarded-Host and X-Forwarded-For in the page
    /seen                JSON list of [method, target, Cookie header] for every request so far
                         (the Cookie header decoded as Latin-1, i.e. byte for byte)
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ATTRS = "; Path=/; Secure; HttpOnly; SameSite=Lax"
SEEN: list[list[str | None]] = []
SEEN_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so only /http10 is HTTP/1.0

    def log_message(self, fmt, *args):  # noqa: D401 - quiet but kept in the log file
        print(fmt % args, flush=True)

    def _send(self, status: int, body: str, headers: list[tuple[str, str]] = (), ctype: str = "text/html; charset=utf-8"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)  # values are written as Latin-1
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with SEEN_LOCK:
            SEEN.append(["GET", self.path, self.headers.get("Cookie")])
        route = url.path
        if route == "/healthz":
            self._send(200, "ok", ctype="text/plain")
        elif route == "/cookie":
            prefix = "big="
            size = int(q.get("len", "100"))
            value = "x" * (size - len(prefix) - len(ATTRS))
            self._send(200, "<p>one cookie</p>", [("Set-Cookie", prefix + value + ATTRS)])
        elif route == "/cookies":
            n = int(q.get("n", "1"))
            self._send(200, f"<p>{n} cookies</p>", [("Set-Cookie", f"c{i}=1{ATTRS}") for i in range(n)])
        elif route == "/dup":
            self._send(
                200,
                "<p>pref twice</p>",
                [
                    ("Set-Cookie", f"pref=1{ATTRS}"),
                    ("Set-Cookie", "pref=2; Path=/dup; Secure; HttpOnly; SameSite=Lax"),
                ],
            )
        elif route == "/slow":
            time.sleep(int(q.get("ms", "0")) / 1000)
            self._send(200, "<p>slow</p>")
        elif route == "/http10":
            body = b"<p>old server</p>"
            self.wfile.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            self.close_connection = True
        elif route == "/space-redirect":
            self._send(302, "", [("Location", "/a b")])
        elif route == "/a%20b":
            self._send(200, "<p>landed</p>")
        elif route == "/latin1-cookie":
            self._send(200, "<p>latin-1</p>", [("Set-Cookie", "sid=caf\xe9" + ATTRS)])
        elif route == "/reflect":
            host = self.headers.get("X-Forwarded-Host", "")
            client = self.headers.get("X-Forwarded-For", "")
            self._send(200, f"<p>host {host}, client {client}</p>")
        elif route == "/seen":
            with SEEN_LOCK:
                self._send(200, json.dumps(SEEN), ctype="application/json")
        else:
            self._send(404, "not found", ctype="text/plain")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "5004"))), Handler)
    server.daemon_threads = True
    print(f"quirks app listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
