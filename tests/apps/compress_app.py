"""Flask app behind tlsfront for the response-compression tests
(tests/e2e/test_protect_compression.py).

Every body is deterministic (same bytes on every start), so a test can fetch
a page straight from the app and compare it with what came through tlsfront.

Routes:
    /healthz            "ok"
    /big.html           ~100 KiB text/html (UTF-8, some non-ASCII), strong
                        ETag "big-v1", Accept-Ranges: bytes; answers Range with
                        206 and If-None-Match with 304 (Werkzeug make_conditional)
    /small.html         exactly 200 bytes of text/html
    /sized?n=N          exactly N bytes of text/html (Content-Length: N)
    /image.png          a valid 64x64 PNG (noise, ~12 KiB), image/png
    /data.json          ~20 KiB application/json
    /vnd.json           the same bytes as application/vnd.api+json
    /notransform.html   the big page with Cache-Control: no-transform
    /pregzipped.html    the big page gzipped by the app (Content-Encoding: gzip)
    /nocontent          204
    /sse?token=T        text/event-stream: event 1, then waits (up to 60 s)
                        until /release?token=T, then event 2, then ends
    /stream?token=T&kib=K&chunk=C
                        K KiB of text/plain in C KiB chunks (no Content-Length),
                        a short pause between chunks; after the first half it
                        waits (up to 60 s) for /release?token=T. Empty token: no wait.
    /release?token=T    lets the waiting /sse or /stream with that token go on
    /state?token=T      JSON {"released", "sent", "finished"} of that stream
    HOST, PORT          for ``python compress_app.py`` (Werkzeug, threaded)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import struct
import threading
import time
import zlib

from flask import Flask, Response, jsonify, request

WAIT_LIMIT = 60.0  # a test that never releases does not hang the app forever

WORDS = (
    "proxy tls certificate stream chunk header cookie session route upstream "
    "compression gzip brotli zstandard vary etag range partial content encoding "
    "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c\u8a9e \u0436\u0443\u0440\u043d\u0430\u043b "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
).split()


def prose(seed: int, size: int) -> bytes:
    """Deterministic text of exactly `size` bytes (UTF-8, padded with ASCII)."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    while total < size:
        line = (" ".join(rng.choice(WORDS) for _ in range(12)) + f" {rng.randrange(10**9)}\n").encode()
        parts.append(line)
        total += len(line)
    data = b"".join(parts)
    # Cut on a character boundary, pad with ASCII to the exact size.
    data = data[:size].decode("utf-8", "ignore").encode()
    return data + b"." * (size - len(data))


def big_page() -> bytes:
    head = (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>big page</title></head><body>\n<h1 id=\"first\">Big page \u00e9\u00fc\u65e5</h1>\n<pre id=\"text\">"
    ).encode()
    body = prose(1, 100 * 1024).replace(b"<", b"(").replace(b"&", b"+")
    digest = hashlib.sha256(body).hexdigest()[:16]
    tail = f"</pre>\n<p id=\"last\">END-OF-PAGE-{digest}</p>\n</body></html>\n".encode()
    return head + body + tail


def png(width: int = 64, height: int = 64) -> bytes:
    rng = random.Random(7)
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(width * 3)) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def json_body() -> bytes:
    rng = random.Random(3)
    items = [
        {"id": i, "name": " ".join(rng.choice(WORDS) for _ in range(4)), "score": rng.randrange(10**6)}
        for i in range(300)
    ]
    return json.dumps({"items": items}, ensure_ascii=False).encode()


def sized(n: int) -> bytes:
    head = b"<!doctype html><title>s</title><p>"
    if n <= len(head):
        return b"x" * n
    return head + prose(n, n - len(head)).replace(b"<", b"(")


BIG = big_page()
BIG_ETAG = "big-v1"
SMALL = sized(200)
PNG = png()
JSON = json_body()
PREGZIPPED = gzip.compress(BIG, compresslevel=6, mtime=0)


def stream_chunk(index: int, size: int) -> bytes:
    return prose(1000 + index, size)


# ---------------------------------------------------------------- waits

_lock = threading.Lock()
_streams: dict[str, dict] = {}


def _state(token: str) -> dict:
    with _lock:
        st = _streams.get(token)
        if st is None:
            st = {"event": threading.Event(), "sent": 0, "finished": False}
            _streams[token] = st
        return st


def _wait(token: str) -> None:
    if token:
        _state(token)["event"].wait(WAIT_LIMIT)


app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return Response("ok", mimetype="text/plain")


@app.route("/big.html", methods=["GET", "HEAD"])
def big():
    resp = Response(BIG, mimetype="text/html")
    resp.set_etag(BIG_ETAG)
    return resp.make_conditional(request, accept_ranges=True, complete_length=len(BIG))


@app.get("/small.html")
def small():
    return Response(SMALL, mimetype="text/html")


@app.get("/sized")
def sized_page():
    return Response(sized(int(request.args["n"])), mimetype="text/html")


@app.get("/image.png")
def image():
    return Response(PNG, mimetype="image/png")


@app.get("/data.json")
def data_json():
    return Response(JSON, content_type="application/json")


@app.get("/vnd.json")
def vnd_json():
    return Response(JSON, content_type="application/vnd.api+json")


@app.get("/notransform.html")
def notransform():
    resp = Response(BIG, mimetype="text/html")
    resp.headers["Cache-Control"] = "public, max-age=60, no-transform"
    return resp


@app.get("/pregzipped.html")
def pregzipped():
    resp = Response(PREGZIPPED, mimetype="text/html")
    resp.headers["Content-Encoding"] = "gzip"
    resp.headers["Vary"] = "Accept-Encoding"
    return resp


@app.get("/nocontent")
def nocontent():
    return Response(status=204)


@app.get("/sse")
def sse():
    token = request.args.get("token", "")
    st = _state(token) if token else None

    def events():
        yield b"id: 1\nevent: tick\ndata: event 1\n\n"
        _wait(token)
        yield b"id: 2\nevent: tick\ndata: event 2\n\n"
        if st is not None:
            st["finished"] = True

    resp = Response(events(), status=200)
    resp.headers["Content-Type"] = "text/event-stream"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@app.get("/stream")
def stream():
    token = request.args.get("token", "")
    kib = int(request.args.get("kib", "1024"))
    chunk_kib = int(request.args.get("chunk", "64"))
    pause = float(request.args.get("pause", "0.02"))
    count = kib // chunk_kib
    st = _state(token) if token else None

    def body():
        for i in range(count):
            if i == count // 2:
                _wait(token)
            data = stream_chunk(i, chunk_kib * 1024)
            yield data
            if st is not None:
                st["sent"] += len(data)
            if pause and i != count - 1:
                time.sleep(pause)
        if st is not None:
            st["finished"] = True

    return Response(body(), mimetype="text/plain")


@app.get("/release")
def release():
    _state(request.args["token"])["event"].set()
    return Response("released", mimetype="text/plain")


@app.get("/state")
def state():
    st = _state(request.args["token"])
    return jsonify(released=st["event"].is_set(), sent=st["sent"], finished=st["finished"])


if __name__ == "__main__":
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        threaded=True,
        use_reloader=False,
        debug=False,
    )
