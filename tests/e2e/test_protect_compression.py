"""Response compression in tlsfront (issue 20, `[compression]`), end to end.

    client (http.client / requests / Chromium) --https--> tlsfront
        --http--> tests/apps/compress_app.py (Flask, Werkzeug threaded server)

Every test makes real requests over TLS to a real tlsfront process started
with its own config file, and checks the bytes that arrive against the bytes
the app sends when asked directly (127.0.0.1, no tlsfront). Compressed bodies
are decoded with the real decoders: zlib/gzip (standard library), the
official Brotli bindings (`brotli`) and Zstandard's (`zstandard`), both
pinned in tests/e2e/requirements.txt.

Raw bytes are read with http.client (HTTP/1.1, no ALPN, no automatic
decoding): `Accept-Encoding` is always set explicitly, or left out on
purpose (`skip_accept_encoding`), never added by the client library.

Streaming (SSE, the 1 MiB body): the app sends the first part, then blocks
until the test calls its /release?token=... endpoint. The test must be able
to decode the first part BEFORE it releases the app, which proves tlsfront
flushed what the app flushed instead of buffering the body. The app's own
wait is bounded (60 s) and the test always releases in `finally`.

Contract: /tmp/protect/contract.md, section [compression]:
    enabled = true; algorithms = ["zstd", "br", "gzip"] (server preference);
    types = text/html, text/css, text/plain, text/javascript,
            application/javascript, application/json, application/xml,
            image/svg+xml, +json, +xml; min_bytes = 1024.
    Never compressed: already Content-Encoding, 206, Cache-Control:
    no-transform, HEAD, 1xx/204/304, type not in types, known length < min_bytes.
    Compressed: Content-Encoding set, Content-Length removed (chunked on
    HTTP/1.1), Vary: Accept-Encoding (also on eligible responses sent
    uncompressed), strong ETag made weak, Accept-Ranges removed.
    Metric: tlsfront_compressed_responses_total{algorithm=...}.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import brotli
import pytest
import zstandard

from conftest import DEMO_PASSWORD, DEMO_USER, stop_process
from routes_support import APPS_DIR, AppProcess, Apps, TlsFront, start_tlsfront, wait_for

try:
    from playwright.sync_api import sync_playwright
except ImportError as exc:  # pragma: no cover - environment problem
    sync_playwright = None
    _PLAYWRIGHT_IMPORT_ERROR = exc
else:
    _PLAYWRIGHT_IMPORT_ERROR = None

COMPRESS_APP = APPS_DIR / "compress_app.py"

TIMEOUT = 10.0  # every socket operation of a plain request
STREAM_STEP_TIMEOUT = 15.0  # one phase of a streamed response
ALGORITHMS = ["zstd", "br", "gzip"]
ENCODED = set(ALGORITHMS)
HTML = "text/html; charset=utf-8"

EVENT1 = b"id: 1\nevent: tick\ndata: event 1\n\n"
EVENT2 = b"id: 2\nevent: tick\ndata: event 2\n\n"

STREAM_KIB = 1024
STREAM_CHUNK_KIB = 64
HALF = STREAM_KIB * 1024 // 2

CHROMIUM_BIN = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
LAUNCH_TIMEOUT_MS = 20_000
ACTION_TIMEOUT_MS = 10_000
BASE_ARGS = [  # as tests/e2e/test_browser.py
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]


# --------------------------------------------------------------------------- HTTP helpers


@dataclass
class Resp:
    status: int
    version: int
    headers: list[tuple[str, str]]
    body: bytes  # as on the wire (after de-chunking), never decoded
    chunked: bool

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return ", ".join(values) if values else None

    @property
    def encoding(self) -> str | None:
        return self.header("Content-Encoding")

    def vary_tokens(self) -> list[str]:
        return [t.strip().lower() for v in self.all("Vary") for t in v.split(",") if t.strip()]

    def describe(self) -> str:
        return f"status={self.status} chunked={self.chunked} headers={self.headers} body[{len(self.body)}]"


def tls_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def https_conn(tf: TlsFront, timeout: float = TIMEOUT) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("localhost", tf.port, context=tls_context(tf.ca), timeout=timeout)


def send(conn: http.client.HTTPConnection, method: str, path: str, ae: str | None, headers: dict[str, str] | None):
    # skip_accept_encoding: http.client would otherwise add "Accept-Encoding: identity".
    conn.putrequest(method, path, skip_accept_encoding=True)
    if ae is not None:
        conn.putheader("Accept-Encoding", ae)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn.getresponse()


def fetch_conn(conn, method: str, path: str, ae: str | None, headers: dict[str, str] | None) -> Resp:
    try:
        r = send(conn, method, path, ae, headers)
        body = r.read()
        return Resp(r.status, r.version, r.getheaders(), body, bool(r.chunked))
    finally:
        conn.close()


def through(tf: TlsFront, path: str, ae: str | None = None, method: str = "GET", headers=None) -> Resp:
    """One request through tlsfront over TLS (HTTP/1.1); the raw body."""
    return fetch_conn(https_conn(tf), method, path, ae, headers)


def direct(app: AppProcess, path: str, method: str = "GET", headers=None) -> Resp:
    """The same request straight to the app, without Accept-Encoding."""
    host, port = app.target.rsplit(":", 1)
    return fetch_conn(http.client.HTTPConnection(host, int(port), timeout=TIMEOUT), method, path, None, headers)


class StreamDecoder:
    """Incremental decoder of one content coding; accepts several gzip members
    or zstd frames back to back (each complete)."""

    def __init__(self, coding: str):
        self.coding = coding
        self.out = bytearray()
        self.raw = 0
        self._new()

    def _new(self):
        if self.coding == "gzip":
            self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.coding == "br":
            self.d = brotli.Decompressor()
        elif self.coding == "zstd":
            self.d = zstandard.ZstdDecompressor().decompressobj()
        elif self.coding == "identity":
            self.d = None
        else:
            raise AssertionError(f"unknown coding {self.coding!r}")

    def feed(self, data: bytes) -> None:
        self.raw += len(data)
        if self.d is None:
            self.out += data
            return
        if self.coding == "br":
            self.out += self.d.process(data)
            return
        while data:
            self.out += self.d.decompress(data)
            if self.d.eof and self.d.unused_data:
                data = self.d.unused_data
                self._new()
            else:
                data = b""

    @property
    def finished(self) -> bool:
        if self.d is None:
            return True
        if self.coding == "br":
            return self.d.is_finished()
        return self.d.eof


def decode(coding: str, data: bytes) -> bytes:
    dec = StreamDecoder(coding)
    dec.feed(data)
    assert dec.finished, f"{coding} stream of {len(data)} bytes is truncated (decoded {len(dec.out)} bytes so far)"
    return bytes(dec.out)


@dataclass
class Stream:
    """A response being read while it streams; `sock` bounds each read."""

    conn: http.client.HTTPSConnection
    sock: socket.socket
    r: http.client.HTTPResponse

    def read_some(self, timeout: float) -> bytes | None:
        """Raw bytes of the body as they arrive (b"" at the end), or None when
        nothing came within `timeout` (the stream is unusable after that:
        a timed-out socket file refuses further reads, so None is final)."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            return self.r.read1(65536)
        except (TimeoutError, socket.timeout):
            return None

    def close(self):
        self.r.close()
        self.conn.close()


def open_stream(tf: TlsFront, path: str, ae: str) -> Stream:
    conn = https_conn(tf, timeout=STREAM_STEP_TIMEOUT)
    conn.connect()
    sock = conn.sock
    r = send(conn, "GET", path, ae, {"Accept": "text/event-stream, */*"})
    return Stream(conn, sock, r)


def read_until(st: Stream, dec: StreamDecoder, cond, timeout: float, what: str) -> None:
    """Feeds raw chunks to `dec` until cond(dec.out) holds; fails with what
    was seen when `timeout` passes or the body ends first."""
    deadline = time.monotonic() + timeout
    ended = False
    while not cond(dec.out):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        chunk = st.read_some(left)
        if chunk is None:
            break
        if not chunk:
            ended = True
            break
        dec.feed(chunk)
    if not cond(dec.out):
        tail = bytes(dec.out[-200:])
        why = "the body ended" if ended else f"not seen within {timeout}s"
        pytest.fail(
            f"{what}: {why}; read {dec.raw} raw bytes, decoded {len(dec.out)} bytes (last: {tail!r})",
            pytrace=False,
        )


def read_to_end(st: Stream, dec: StreamDecoder, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        chunk = st.read_some(deadline - time.monotonic())
        if chunk is None:
            pytest.fail(f"body did not end within {timeout}s (decoded {len(dec.out)} bytes)", pytrace=False)
        if not chunk:
            return
        dec.feed(chunk)


def app_get_json(app: AppProcess, path: str) -> dict:
    resp = direct(app, path)
    assert resp.status == 200, resp.describe()
    return json.loads(resp.body)


def release(app: AppProcess, token: str) -> None:
    resp = direct(app, f"/release?token={token}")
    assert resp.status == 200, resp.describe()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def metrics(tf: TlsFront) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", tf.admin_port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        text = r.read().decode()
        assert r.status == 200, text
        return text
    finally:
        conn.close()


def assert_vary_accept_encoding(resp: Resp) -> None:
    tokens = resp.vary_tokens()
    assert "accept-encoding" in tokens or "*" in tokens, f"no Vary: Accept-Encoding: {resp.describe()}"


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def capp(tmp_path_factory):
    apps = Apps(tmp=tmp_path_factory.mktemp("compress-app"))
    try:
        yield apps.werkzeug("compress-app", COMPRESS_APP, {})
    finally:
        apps.stop_all()


class Fronts:
    """tlsfront processes started by one test (stopped at teardown)."""

    def __init__(self, tmp: Path, certdir: Path):
        self.tmp, self.certdir, self.started = tmp, certdir, []

    def start(self, toml: str, name: str = "tlsfront") -> TlsFront:
        tf = start_tlsfront(self.tmp / f"{name}-{len(self.started)}", self.certdir, toml, name=name)
        self.started.append(tf)
        return tf

    def stop_all(self):
        for tf in self.started:
            stop_process(tf.proc)


@pytest.fixture
def fronts(tmp_path, certdir):
    f = Fronts(tmp_path, certdir)
    yield f
    f.stop_all()


def default_routes(capp: AppProcess) -> str:
    """Top level: compression defaults. /events/*: a route whose types list
    text/event-stream; /off/*: a route with compression switched off; the rest:
    the app with everything from top level."""
    url = capp.server_url
    return (
        "[[route]]\n"
        'path = "/events"\n'
        "strip_prefix = true\n"
        f'url = "{url}"\n'
        "[route.compression]\n"
        'types = ["text/event-stream"]\n'
        "\n"
        "[[route]]\n"
        'path = "/off"\n'
        "strip_prefix = true\n"
        f'url = "{url}"\n'
        "[route.compression]\n"
        "enabled = false\n"
        "\n"
        "[[route]]\n"
        f'url = "{url}"\n'
    )


@pytest.fixture(scope="module")
def front(capp, certdir, tmp_path_factory):
    tf = start_tlsfront(tmp_path_factory.mktemp("front"), certdir, default_routes(capp), name="tlsfront-compression")
    try:
        yield tf
    finally:
        stop_process(tf.proc)


@pytest.fixture(scope="module")
def big(capp) -> bytes:
    resp = direct(capp, "/big.html")
    assert resp.status == 200 and len(resp.body) > 100 * 1024, resp.describe()
    assert resp.header("ETag") == '"big-v1"', resp.describe()
    assert resp.header("Accept-Ranges") == "bytes", resp.describe()
    return resp.body


# --------------------------------------------------------------------------- each algorithm


@pytest.mark.parametrize("coding", ALGORITHMS)
def test_big_page_compressed_with_each_algorithm(front, capp, big, coding):
    resp = through(front, "/big.html", ae=coding)
    assert resp.status == 200, resp.describe()
    assert resp.version == 11
    assert resp.encoding == coding, resp.describe()
    assert decode(coding, resp.body) == big, "decoded body differs from the app's"
    assert len(resp.body) < len(big) // 2, f"{coding}: {len(resp.body)} bytes for {len(big)}"
    assert_vary_accept_encoding(resp)
    assert resp.header("Content-Length") is None, resp.describe()
    assert resp.chunked, f"HTTP/1.1 compressed response not chunked: {resp.describe()}"
    assert resp.header("ETag") == 'W/"big-v1"', resp.describe()
    assert resp.header("Accept-Ranges") is None, resp.describe()
    assert resp.header("Content-Type") == HTML, resp.describe()


@pytest.mark.parametrize("path,ctype", [("/data.json", "application/json"), ("/vnd.json", "application/vnd.api+json")])
def test_json_types_are_compressed(front, capp, path, ctype):
    expected = direct(capp, path).body
    resp = through(front, path, ae="gzip")
    assert resp.status == 200, resp.describe()
    assert resp.header("Content-Type") == ctype, resp.describe()
    assert resp.encoding == "gzip", resp.describe()
    assert decode("gzip", resp.body) == expected
    assert_vary_accept_encoding(resp)
    assert resp.header("Content-Length") is None, resp.describe()


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    "ae,expected",
    [
        ("gzip;q=1, br;q=0", "gzip"),
        ("zstd;q=0, br, gzip", "br"),
        ("identity", None),
        (None, None),  # no Accept-Encoding header at all
        ("*", "zstd"),
        ("gzip;q=0", None),
        ("zstd, br, gzip", "zstd"),
        ("gzip, br", "br"),  # server preference, not the client's order
        ("gzip, deflate, br, zstd", "zstd"),  # what Chromium sends
        ("deflate", None),
        ("zstd;q=0, *", "br"),
    ],
    ids=lambda v: repr(v),
)
def test_accept_encoding_negotiation(front, big, ae, expected):
    resp = through(front, "/big.html", ae=ae)
    assert resp.status == 200, resp.describe()
    assert resp.encoding == expected, f"Accept-Encoding {ae!r}: {resp.describe()}"
    if expected is None:
        assert resp.body == big, f"Accept-Encoding {ae!r}: identity body differs from the app's"
    else:
        assert decode(expected, resp.body) == big
    # Eligible response: Vary also when sent uncompressed.
    assert_vary_accept_encoding(resp)


# --------------------------------------------------------------------------- never compressed

ALL = "zstd, br, gzip"


def test_head_is_not_compressed(front, capp):
    resp = through(front, "/big.html", ae=ALL, method="HEAD")
    assert resp.status == 200, resp.describe()
    assert resp.encoding is None, resp.describe()
    assert resp.body == b""


def test_png_is_not_compressed(front, capp):
    expected = direct(capp, "/image.png").body
    assert expected.startswith(b"\x89PNG") and len(expected) > 4096
    resp = through(front, "/image.png", ae=ALL)
    assert resp.status == 200, resp.describe()
    assert resp.header("Content-Type") == "image/png"
    assert resp.encoding is None, resp.describe()
    assert resp.body == expected


def test_no_transform_is_not_compressed(front, big):
    resp = through(front, "/notransform.html", ae=ALL)
    assert resp.status == 200, resp.describe()
    assert resp.encoding is None, resp.describe()
    assert "no-transform" in (resp.header("Cache-Control") or ""), resp.describe()
    assert resp.body == big


def test_already_encoded_body_is_untouched(front, capp, big):
    app_resp = direct(capp, "/pregzipped.html")
    assert app_resp.header("Content-Encoding") == "gzip"
    resp = through(front, "/pregzipped.html", ae=ALL)
    assert resp.status == 200, resp.describe()
    assert resp.all("Content-Encoding") == ["gzip"], resp.describe()
    assert resp.body == app_resp.body, "the app's gzip bytes were changed"
    assert gzip.decompress(resp.body) == big


def test_range_request_206_is_not_compressed(front, big):
    resp = through(front, "/big.html", ae=ALL, headers={"Range": "bytes=100-1099"})
    assert resp.status == 206, resp.describe()
    assert resp.encoding is None, resp.describe()
    assert resp.header("Content-Range") == f"bytes 100-1099/{len(big)}", resp.describe()
    assert resp.body == big[100:1100]


def test_small_body_is_not_compressed(front, capp):
    expected = direct(capp, "/small.html").body
    assert len(expected) == 200
    resp = through(front, "/small.html", ae=ALL)
    assert resp.status == 200, resp.describe()
    assert resp.encoding is None, resp.describe()
    assert resp.body == expected


@pytest.mark.parametrize("n,expected", [(1023, None), (1024, "gzip")])
def test_default_min_bytes_boundary(front, capp, n, expected):
    body = direct(capp, f"/sized?n={n}").body
    assert len(body) == n
    resp = through(front, f"/sized?n={n}", ae="gzip")
    assert resp.status == 200, resp.describe()
    assert resp.encoding == expected, f"{n} bytes with default min_bytes 1024: {resp.describe()}"
    assert (decode("gzip", resp.body) if expected else resp.body) == body


def test_204_and_304_are_not_compressed(front):
    resp = through(front, "/nocontent", ae=ALL)
    assert resp.status == 204, resp.describe()
    assert resp.encoding is None, resp.describe()
    assert resp.body == b""
    resp = through(front, "/big.html", ae=ALL, headers={"If-None-Match": '"big-v1"'})
    assert resp.status == 304, resp.describe()
    assert resp.encoding is None, resp.describe()
    assert resp.body == b""


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_sse_compressed_arrives_event_by_event(front, capp, coding):
    token = uuid.uuid4().hex
    st = None
    try:
        st = open_stream(front, f"/events/sse?token={token}", coding)
        assert st.r.status == 200
        assert st.r.getheader("Content-Type") == "text/event-stream", st.r.getheaders()
        assert st.r.getheader("Content-Encoding") == coding, st.r.getheaders()
        assert st.r.getheader("Content-Length") is None, st.r.getheaders()
        dec = StreamDecoder(coding)
        read_until(st, dec, lambda out: EVENT1 in out, STREAM_STEP_TIMEOUT,
                   f"event 1 decodable ({coding}) before the app is released")
        assert bytes(dec.out) == EVENT1
        # The app is really still holding event 2 back.
        assert app_get_json(capp, f"/state?token={token}") == {"finished": False, "released": False, "sent": 0}
        release(capp, token)
        read_until(st, dec, lambda out: EVENT2 in out, STREAM_STEP_TIMEOUT, f"event 2 ({coding}) after release")
        read_to_end(st, dec, STREAM_STEP_TIMEOUT)
        assert dec.finished, f"{coding} stream not properly terminated"
        assert bytes(dec.out) == EVENT1 + EVENT2
    finally:
        release(capp, token)
        if st is not None:
            st.close()


def test_sse_not_in_default_types_is_sent_uncompressed_and_streamed(front, capp):
    token = uuid.uuid4().hex
    st = None
    try:
        st = open_stream(front, f"/sse?token={token}", ALL)
        assert st.r.status == 200
        assert st.r.getheader("Content-Encoding") is None, st.r.getheaders()
        dec = StreamDecoder("identity")
        read_until(st, dec, lambda out: EVENT1 in out, STREAM_STEP_TIMEOUT, "event 1 before release (uncompressed)")
        assert bytes(dec.out) == EVENT1
        release(capp, token)
        read_to_end(st, dec, STREAM_STEP_TIMEOUT)
        assert bytes(dec.out) == EVENT1 + EVENT2
    finally:
        release(capp, token)
        if st is not None:
            st.close()


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_one_mib_body_is_streamed_not_buffered(front, capp, coding):
    query = f"kib={STREAM_KIB}&chunk={STREAM_CHUNK_KIB}"
    expected = direct(capp, f"/stream?{query}&pause=0").body
    assert len(expected) == STREAM_KIB * 1024
    token = uuid.uuid4().hex
    st = None
    try:
        st = open_stream(front, f"/stream?{query}&pause=0.02&token={token}", coding)
        assert st.r.status == 200
        assert st.r.getheader("Content-Encoding") == coding, st.r.getheaders()
        assert st.r.getheader("Content-Length") is None, st.r.getheaders()
        assert st.r.chunked, st.r.getheaders()
        dec = StreamDecoder(coding)
        # 1. Anything at all before the app may finish: no whole-body buffering.
        read_until(st, dec, lambda out: len(out) > 0, STREAM_STEP_TIMEOUT,
                   "first decoded bytes before the app has finished")
        # 2. Everything the app flushed (the first half, 8 chunks of 64 KiB),
        #    while the app is blocked.
        read_until(st, dec, lambda out: len(out) >= HALF, STREAM_STEP_TIMEOUT,
                   f"the {HALF} bytes the app already sent, before it is released")
        app_state = app_get_json(capp, f"/state?token={token}")
        assert app_state == {"finished": False, "released": False, "sent": HALF}, app_state
        assert bytes(dec.out) == expected[:HALF]
        release(capp, token)
        read_to_end(st, dec, STREAM_STEP_TIMEOUT * 2)
        assert dec.finished, f"{coding} stream not properly terminated"
        assert len(dec.out) == len(expected)
        assert bytes(dec.out) == expected
        assert app_get_json(capp, f"/state?token={token}")["finished"] is True
    finally:
        release(capp, token)
        if st is not None:
            st.close()


# --------------------------------------------------------------------------- switches and keys


def test_top_level_disabled_compresses_nothing(fronts, capp, big):
    tf = fronts.start("[compression]\nenabled = false\n\n" f'[[route]]\nurl = "{capp.server_url}"\n')
    for ae in ("gzip", "br", "zstd", ALL, "*"):
        resp = through(tf, "/big.html", ae=ae)
        assert resp.status == 200, resp.describe()
        assert resp.encoding is None, f"Accept-Encoding {ae!r}: {resp.describe()}"
        assert resp.body == big
        assert resp.header("ETag") == '"big-v1"', resp.describe()
    json_body = direct(capp, "/data.json").body
    resp = through(tf, "/data.json", ae=ALL)
    assert resp.encoding is None, resp.describe()
    assert resp.body == json_body


def test_route_disabled_while_top_level_on(front, big):
    """BREACH switch-off for one route: /off/* uncompressed, the rest compressed."""
    off = through(front, "/off/big.html", ae=ALL)
    assert off.status == 200, off.describe()
    assert off.encoding is None, off.describe()
    assert off.body == big
    on = through(front, "/big.html", ae=ALL)
    assert on.status == 200, on.describe()
    assert on.encoding == "zstd", on.describe()
    assert decode("zstd", on.body) == big


def test_route_enabled_while_top_level_off(fronts, capp, big):
    url = capp.server_url
    tf = fronts.start(
        "[compression]\nenabled = false\n\n"
        f'[[route]]\npath = "/on"\nstrip_prefix = true\nurl = "{url}"\n[route.compression]\nenabled = true\n\n'
        f'[[route]]\nurl = "{url}"\n'
    )
    on = through(tf, "/on/big.html", ae="gzip")
    assert on.encoding == "gzip", on.describe()
    assert decode("gzip", on.body) == big
    off = through(tf, "/big.html", ae="gzip")
    assert off.encoding is None, off.describe()
    assert off.body == big


def test_min_bytes_key(fronts, capp):
    tf = fronts.start("[compression]\nmin_bytes = 5000\n\n" f'[[route]]\nurl = "{capp.server_url}"\n')
    for n, expected in ((1024, None), (4999, None), (5000, "gzip"), (20000, "gzip")):
        body = direct(capp, f"/sized?n={n}").body
        resp = through(tf, f"/sized?n={n}", ae="gzip")
        assert resp.status == 200, resp.describe()
        assert resp.encoding == expected, f"{n} bytes, min_bytes 5000: {resp.describe()}"
        assert (decode("gzip", resp.body) if expected else resp.body) == body
    # A lower threshold: the 200-byte page is compressed.
    tf2 = fronts.start("[compression]\nmin_bytes = 100\n\n" f'[[route]]\nurl = "{capp.server_url}"\n')
    small = direct(capp, "/small.html").body
    resp = through(tf2, "/small.html", ae="gzip")
    assert resp.encoding == "gzip", f"200 bytes, min_bytes 100: {resp.describe()}"
    assert decode("gzip", resp.body) == small


@pytest.mark.parametrize(
    "algorithms,ae,expected",
    [
        ('["gzip"]', "zstd, br, gzip", "gzip"),
        ('["gzip"]', "zstd, br", None),
        ('["gzip"]', "*", "gzip"),
        ('["gzip", "br"]', "zstd, br, gzip", "gzip"),  # the configured order is the preference
        ('["br", "zstd"]', "zstd, gzip", "zstd"),
        ('["br", "zstd"]', "gzip", None),
    ],
)
def test_algorithms_key(fronts, capp, big, algorithms, ae, expected):
    tf = fronts.start(f"[compression]\nalgorithms = {algorithms}\n\n" f'[[route]]\nurl = "{capp.server_url}"\n')
    resp = through(tf, "/big.html", ae=ae)
    assert resp.status == 200, resp.describe()
    assert resp.encoding == expected, f"algorithms = {algorithms}, Accept-Encoding {ae!r}: {resp.describe()}"
    assert (decode(expected, resp.body) if expected else resp.body) == big


# --------------------------------------------------------------------------- metric


def test_metric_counts_gzip_responses(fronts, capp):
    tf = fronts.start(f'[[route]]\nurl = "{capp.server_url}"\n')
    before = metrics(tf)
    b_gzip = metric_value(before, "tlsfront_compressed_responses_total", algorithm="gzip")
    b_br = metric_value(before, "tlsfront_compressed_responses_total", algorithm="br")
    b_zstd = metric_value(before, "tlsfront_compressed_responses_total", algorithm="zstd")

    made = {"gzip": 0, "br": 0}
    for path in ("/big.html", "/data.json", "/big.html"):
        resp = through(tf, path, ae="gzip")
        assert resp.encoding == "gzip", resp.describe()
        made["gzip"] += 1
    resp = through(tf, "/big.html", ae="br")
    assert resp.encoding == "br", resp.describe()
    made["br"] += 1
    # Not compressed: none of these may count.
    for path, method in (("/small.html", "GET"), ("/image.png", "GET"), ("/big.html", "HEAD"), ("/notransform.html", "GET")):
        resp = through(tf, path, ae="gzip", method=method)
        assert resp.encoding is None, resp.describe()
    assert through(tf, "/big.html", ae="identity").encoding is None

    def counted():
        return metric_value(metrics(tf), "tlsfront_compressed_responses_total", algorithm="gzip") - b_gzip >= made["gzip"]

    wait_for("the gzip responses to be counted", counted, 5.0, tf.log)
    time.sleep(0.5)  # nothing more may come
    after = metrics(tf)
    assert "tlsfront_compressed_responses_total" in after
    got_gzip = metric_value(after, "tlsfront_compressed_responses_total", algorithm="gzip") - b_gzip
    got_br = metric_value(after, "tlsfront_compressed_responses_total", algorithm="br") - b_br
    got_zstd = metric_value(after, "tlsfront_compressed_responses_total", algorithm="zstd") - b_zstd
    lines = [l for l in after.splitlines() if "compressed_responses" in l]
    assert got_gzip == made["gzip"], lines
    assert got_br == made["br"], lines
    assert got_zstd == 0, lines


# --------------------------------------------------------------------------- Chromium


def spki_sha256_b64(cert_pem: Path) -> str:
    """base64(SHA-256(SPKI DER)) of the first certificate (the leaf), for
    --ignore-certificate-errors-spki-list (as tests/e2e/test_browser.py)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the `openssl` CLI is needed to compute the SPKI pin", pytrace=False)

    def run(args: list[str], data: bytes | None) -> bytes:
        res = subprocess.run([openssl, *args], input=data, capture_output=True, timeout=10)
        if res.returncode != 0:
            pytest.fail(f"openssl {' '.join(args)} failed: {res.stderr.decode(errors='replace')}", pytrace=False)
        return res.stdout

    pubkey_pem = run(["x509", "-in", str(cert_pem), "-pubkey", "-noout"], None)
    spki_der = run(["pkey", "-pubin", "-outform", "der"], pubkey_pem)
    digest = run(["dgst", "-sha256", "-binary"], spki_der)
    assert len(digest) == 32
    return base64.b64encode(digest).decode("ascii")


def require_browser() -> Path:
    if _PLAYWRIGHT_IMPORT_ERROR is not None:
        pytest.fail(f"cannot import playwright ({_PLAYWRIGHT_IMPORT_ERROR})", pytrace=False)
    if not (CHROMIUM_BIN.is_file() and os.access(CHROMIUM_BIN, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM_BIN} (apt-get install chromium)", pytrace=False)
    return CHROMIUM_BIN


@pytest.fixture(scope="module")
def playwright_instance():
    if sync_playwright is None:
        yield None
        return
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def leaf_spki(certdir) -> str:
    return spki_sha256_b64(certdir / "cert.pem")


def launch(pw, chromium: Path, profile: Path, extra: list[str]):
    ctx = pw.chromium.launch_persistent_context(
        str(profile), executable_path=str(chromium), headless=True, args=BASE_ARGS + extra, timeout=LAUNCH_TIMEOUT_MS
    )
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    ctx.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    return ctx


def next_hop_protocol(page) -> str:
    return page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")


FETCH_TEXT = """
async (path) => {
  const r = await fetch(path, {cache: 'no-store'});
  return {status: r.status, text: await r.text()};
}
"""


@pytest.mark.parametrize("protocol", ["http/1.1", "h2"], ids=["http1", "h2"])
def test_chromium_loads_big_page_compressed(playwright_instance, front, big, leaf_spki, tmp_path, protocol):
    chromium = require_browser()
    extra = [f"--ignore-certificate-errors-spki-list={leaf_spki}"]
    if protocol == "http/1.1":
        extra.append("--disable-http2")
    ctx = launch(playwright_instance, chromium, tmp_path / "profile", extra)
    try:
        page = ctx.new_page()
        resp = page.goto(f"{front.base_url}/big.html")
        assert resp is not None and resp.status == 200
        assert next_hop_protocol(page) == protocol
        sent_ae = resp.request.all_headers().get("accept-encoding", "")
        headers = resp.all_headers()
        encoding = headers.get("content-encoding")
        assert encoding in ENCODED, f"Chromium sent Accept-Encoding {sent_ae!r}, got headers {headers}"
        offered = [t.split(";")[0].strip() for t in sent_ae.split(",")]
        best = next(a for a in ALGORITHMS if a in offered)
        assert encoding == best, f"Chromium offered {sent_ae!r}: expected {best}, got {encoding}"
        text = big.decode("utf-8")
        pre = text.split('<pre id="text">', 1)[1].split("</pre>", 1)[0]
        last = text.split('<p id="last">', 1)[1].split("</p>", 1)[0]
        assert page.inner_text("#last") == last
        assert page.evaluate("document.getElementById('text').textContent") == pre
        fetched = page.evaluate(FETCH_TEXT, "/big.html")
        assert fetched["status"] == 200
        assert fetched["text"] == text
    finally:
        ctx.close()


def test_chromium_login_through_compressing_tlsfront(playwright_instance, demo_app, fronts, leaf_spki, tmp_path):
    chromium = require_browser()
    tf = fronts.start(f'[[route]]\nurl = "{demo_app.base_url}"\n', name="tlsfront-demo")
    base = tf.base_url
    ctx = launch(playwright_instance, chromium, tmp_path / "profile", [f"--ignore-certificate-errors-spki-list={leaf_spki}"])
    try:
        page = ctx.new_page()
        resp = page.goto(f"{base}/")
        assert resp is not None and resp.status == 200
        assert page.url.startswith(f"{base}/login"), page.url
        page.fill('input[name="username"]', DEMO_USER)
        page.fill('input[name="password"]', DEMO_PASSWORD)
        with page.expect_navigation() as nav:
            page.click('button[type="submit"]')
        resp = nav.value
        assert resp is not None and resp.status == 200, resp
        assert page.url == f"{base}/", page.url
        assert page.locator("#protected").count() == 1, page.content()[:2000]
        assert page.inner_text("#user") == DEMO_USER
        assert page.inner_text("#scheme") == "https"
        # The protected page (~2.8 KiB of HTML) came compressed.
        headers = resp.all_headers()
        assert headers.get("content-encoding") in ENCODED, headers
        # Still logged in after a reload (cookies survived compression).
        resp = page.reload()
        assert resp is not None and resp.status == 200
        assert page.url == f"{base}/", page.url
        assert page.inner_text("#user") == DEMO_USER
        assert resp.all_headers().get("content-encoding") in ENCODED, resp.all_headers()
        info = page.goto(f"{base}/whoami").json()
        assert info["authenticated"] is True, info
        assert info["user"] == DEMO_USER, info
    finally:
        ctx.close()
