"""Small Flask app behind tlsfront for the HTTP/3 end-to-end tests
(tests/e2e/test_http3.py). No ProxyFix: it reports the request exactly as
tlsfront forwarded it.

Environment:
    APP_NAME      shown in every JSON answer ("h3app")
    HOST, PORT    for ``python h3_app.py`` (Werkzeug's threaded server)

Routes:
    /healthz          "ok"
    /whoami           JSON: app, method, path, query, every request header,
                      REMOTE_ADDR (the proxy's side of the socket)
    POST /sha256      JSON: sha256 and length of the request body as received
                      (Content-Length or chunked)
    /slow?ms=N        sleeps N ms (at most 30 s), then "slow done after N ms";
                      prints "slow start <tag>" on stdout when it begins
    /cookie           sets `h3c=1; Path=/` (no Secure, no HttpOnly)
    /leak-redirect    302 to http://127.0.0.1:<own port>/target, the app's own
                      address over http (tlsfront must rewrite it)
    /bytes?n=N        N bytes (at most 16 MiB) of a fixed pattern
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

from flask import Flask, Response, jsonify, request

APP_NAME = os.environ.get("APP_NAME", "h3app")
PORT = int(os.environ.get("PORT", "8000"))

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.route("/whoami", methods=["GET", "POST"])
def whoami():
    return jsonify(
        {
            "app": APP_NAME,
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode("latin-1"),
            "headers": {k: v for k, v in request.headers.items()},
            "remote_addr": request.environ.get("REMOTE_ADDR"),
        }
    )


@app.post("/sha256")
def sha256():
    body = request.get_data(cache=False)
    return jsonify(
        {
            "app": APP_NAME,
            "sha256": hashlib.sha256(body).hexdigest(),
            "length": len(body),
            "content_length": request.headers.get("Content-Length"),
            "transfer_encoding": request.headers.get("Transfer-Encoding"),
        }
    )


@app.get("/slow")
def slow():
    ms = min(int(request.args.get("ms", "1000")), 30_000)
    tag = request.args.get("tag", "")
    print(f"slow start {tag}", flush=True)
    time.sleep(ms / 1000)
    print(f"slow end {tag}", flush=True)
    return f"slow done after {ms} ms", 200, {"Content-Type": "text/plain"}


@app.get("/cookie")
def cookie():
    resp = Response("cookie set", content_type="text/plain")
    resp.headers.add("Set-Cookie", "h3c=1; Path=/")
    return resp


@app.get("/leak-redirect")
def leak_redirect():
    return "", 302, {"Location": f"http://127.0.0.1:{PORT}/target"}


@app.get("/bytes")
def some_bytes():
    n = min(int(request.args.get("n", "0")), 16 * 1024 * 1024)
    pattern = b"0123456789abcdef"
    data = (pattern * (n // len(pattern) + 1))[:n]
    return data, 200, {"Content-Type": "application/octet-stream"}


if __name__ == "__main__":
    print(f"{APP_NAME} on 127.0.0.1:{PORT}", file=sys.stderr, flush=True)
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=PORT,
        threaded=True,
        debug=False,
        use_reloader=False,
    )
