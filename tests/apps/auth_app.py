"""Forward-auth service of tests/e2e/test_protect_auth.py (the part an
Authelia or oauth2-proxy plays in front of tlsfront's `[auth] forward`).

Standard library only (http.server), so the same code serves on TCP
(`PORT`) or on a Unix socket (`UNIX_SOCKET`): Flask's server cannot bind a
Unix socket.

Routes:
    /verify   Cookie `session=good`: 200 with Remote-User: alice,
              Remote-Groups: admins,dev, Remote-Email: alice@example.com.
              Anything else: 302 to https://login.example/?rd=<X-Forwarded-Uri,
              percent-encoded> with `Set-Cookie: auth_flow=started; Path=/`
              (deliberately neither Secure nor HttpOnly: tlsfront must add
              them on the way back) and a small text body.
    /slow     the same answer after SLOW_SECONDS (default 4) seconds
    /last     JSON {"count": N, "last": {...}}: N = /verify + /slow requests
              received, last = the latest one's method, path, raw headers
              (list of [name, value]) and body
    /healthz  "ok"

Environment:
    HOST (127.0.0.1), PORT      serve on TCP
    UNIX_SOCKET                 serve on this Unix socket path instead
    SLOW_SECONDS                delay of /slow
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
import time
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, urlsplit

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "4"))

_lock = threading.Lock()
_state: dict = {"count": 0, "last": None}


def session_of(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get("session")
    return morsel.value if morsel else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:  # a Unix-socket peer has no address
        return self.client_address[0] if self.client_address else "unix"

    def log_message(self, fmt, *args):
        print(f"auth_app: {self.command} {self.path} -> " + (fmt % args), flush=True)

    def send(self, status: int, body: bytes, headers: list[tuple[str, str]] = (), ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if path == "/healthz":
            return self.send(200, b"ok")
        if path == "/last":
            with _lock:
                data = json.dumps(_state).encode()
            return self.send(200, data, ctype="application/json")
        if path in ("/verify", "/slow"):
            with _lock:
                _state["count"] += 1
                _state["last"] = {
                    "method": self.command,
                    "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body": body.decode("latin-1"),
                }
            if path == "/slow":
                time.sleep(SLOW_SECONDS)
            if session_of(self.headers.get("Cookie")) == "good":
                return self.send(
                    200,
                    b"authorized",
                    [
                        ("Remote-User", "alice"),
                        ("Remote-Groups", "admins,dev"),
                        ("Remote-Email", "alice@example.com"),
                    ],
                )
            rd = quote(self.headers.get("X-Forwarded-Uri", ""), safe="")
            return self.send(
                302,
                b"login required",
                [
                    ("Location", f"https://login.example/?rd={rd}"),
                    ("Set-Cookie", "auth_flow=started; Path=/"),
                ],
            )
        return self.send(404, b"not found")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = handle_any


class ThreadingUnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> None:
    sock = os.environ.get("UNIX_SOCKET")
    if sock:
        if os.path.exists(sock):
            os.unlink(sock)
        server = ThreadingUnixHTTPServer(sock, Handler)
        print(f"auth_app: serving on unix:{sock}", flush=True)
    else:
        ThreadingHTTPServer.daemon_threads = True
        server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
        print(f"auth_app: serving on {server.server_address}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
