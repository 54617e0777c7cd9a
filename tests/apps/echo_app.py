"""Echo app of the protection tests (tests/e2e/test_protect_access.py,
tests/e2e/test_protect_auth.py): Flask on Werkzeug's threaded server.

Every request (any method, any path but the two below) is counted per path
and answered with JSON describing what arrived:

    {"method": "POST", "path": "/x", "query": "a=1", "body": "...",
     "headers": [["Host", "localhost:1234"], ...]}

`headers` is the raw header list as it came off the wire (names as sent,
repeats kept, in order), taken from the request handler, not from the WSGI
environ: Werkzeug drops header names with `_` from the environ, and the tests
must see whether such a header (`remote_user`) got through.

Routes:
    /healthz   "ok" (not counted)
    /_counts   JSON {"total": N, "paths": {"/x": n, ...}} (not counted); ask it
               directly on 127.0.0.1:PORT, not through tlsfront

Environment: HOST (127.0.0.1), PORT.
"""

from __future__ import annotations

import os
import threading

from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler

app = Flask(__name__)

_lock = threading.Lock()
_counts: dict[str, int] = {}
_total = 0


class RawHeadersHandler(WSGIRequestHandler):
    """Hands the request's raw header lines to the app."""

    def make_environ(self):
        environ = super().make_environ()
        environ["echo.raw_headers"] = [[k, v] for k, v in self.headers.items()]
        return environ


@app.get("/healthz")
def healthz():
    return "ok"


@app.get("/_counts")
def counts():
    with _lock:
        return jsonify({"total": _total, "paths": dict(_counts)})


@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
@app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def echo(path: str):
    global _total
    with _lock:
        _counts[request.path] = _counts.get(request.path, 0) + 1
        _total += 1
    return jsonify(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode("latin-1"),
            "body": request.get_data(as_text=True),
            "headers": request.environ.get("echo.raw_headers", []),
        }
    )


if __name__ == "__main__":
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        threaded=True,
        request_handler=RawHeadersHandler,
    )
