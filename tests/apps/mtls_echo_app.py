"""A tiny Flask app for the client-certificate (mTLS) end-to-end tests
(tests/e2e/test_protect_mtls.py): every request is answered with what the app
received, and remembered, so a test can tell whether a request reached it.

Routes:
    /healthz   "ok" (not remembered)
    /_seen     JSON list of the paths of every other request received so far
    anything   JSON {"method", "path", "host", "headers": [[name, value], ...]}

Environment:
    HOST, PORT   where Werkzeug's threaded server listens (127.0.0.1, 5000)
"""

from __future__ import annotations

import os
import threading

from flask import Flask, jsonify, request

app = Flask(__name__)

_lock = threading.Lock()
_seen: list[str] = []


@app.route("/healthz")
def healthz():
    return "ok"


@app.route("/_seen")
def seen():
    with _lock:
        return jsonify(list(_seen))


@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "HEAD"])
@app.route("/<path:path>", methods=["GET", "POST", "HEAD"])
def echo(path: str):
    with _lock:
        _seen.append(request.path)
    return jsonify(
        method=request.method,
        path=request.path,
        host=request.host,
        headers=[[k, v] for k, v in request.headers.items()],
    )


if __name__ == "__main__":
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "5000")),
        threaded=True,
        use_reloader=False,
    )
