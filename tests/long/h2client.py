"""A minimal asyncio HTTP/2 client (h2 library) that tells a complete
response (END_STREAM) from an aborted one (RST_STREAM, GOAWAY, EOF)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SNI, Response, client_context, open_tls  # noqa: E402


async def h2_request(port: int, path: str = "/", method: str = "GET", body: bytes | None = None,
                     timeout: float = 10.0) -> Response:
    """One request on a fresh HTTP/2 connection. Raises only when no response
    head arrived; otherwise `complete`/`error` say how the body ended."""
    ctx = client_context(["h2"])
    reader, writer = await open_tls(port, ctx, timeout)
    if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
        writer.close()
        raise RuntimeError("server did not negotiate h2")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 24)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", method), (":scheme", "https"), (":authority", SNI), (":path", path)]
                      + ([("content-length", str(len(body)))] if body is not None else []),
                      end_stream=body is None)
    if body is not None:
        conn.send_data(sid, body, end_stream=True)  # small bodies only (within the initial window)
    writer.write(conn.data_to_send())
    resp: Response | None = None
    chunks = []

    async def pump():
        nonlocal resp
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("EOF before END_STREAM")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    hdrs = [(k, v) for k, v in ev.headers]
                    status = int(dict(hdrs)[":status"])
                    resp = Response(status=status, headers=[(k, v) for k, v in hdrs if not k.startswith(":")])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    if resp is not None:
                        resp.length += len(ev.data)
                        chunks.append(ev.data)
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    if resp is not None:
                        resp.complete = True
                    return
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ConnectionError(f"RST_STREAM error_code={ev.error_code!r}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY error_code={ev.error_code!r}")
            out = conn.data_to_send()
            if out:
                writer.write(out)

    try:
        await asyncio.wait_for(pump(), timeout)
    except (ConnectionError, OSError) as e:
        if resp is None:
            raise
        resp.error = f"{type(e).__name__}: {e}"
    finally:
        writer.transport.abort()
    assert resp is not None
    resp.body = b"".join(chunks)
    if resp.complete and resp.header("content-length") is not None and int(resp.header("content-length")) != resp.length:
        # END_STREAM with fewer bytes than announced: the client must notice.
        resp.error = f"content-length {resp.header('content-length')} but {resp.length} bytes"
        resp.complete = False
    return resp


async def h2_cancel_mid_download(port: int, path: str, after: int, timeout: float = 20.0) -> tuple[int, int]:
    """On one HTTP/2 connection: GET `path`, cancel the stream (RST_STREAM
    CANCEL) after `after` body bytes, then GET / on the same connection.
    Returns (bytes received before cancelling, status of the second GET)."""
    ctx = client_context(["h2"])
    reader, writer = await open_tls(port, ctx, timeout)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    first = conn.get_next_available_stream_id()
    conn.send_headers(first, [(":method", "GET"), (":scheme", "https"), (":authority", SNI), (":path", path)],
                      end_stream=True)
    writer.write(conn.data_to_send())
    got = 0
    second = None
    status2 = 0

    async def pump():
        nonlocal got, second, status2
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("EOF")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    if ev.stream_id == first and second is None:
                        got += len(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, first)
                        if got >= after:
                            conn.reset_stream(first, h2.errors.ErrorCodes.CANCEL)
                            second = conn.get_next_available_stream_id()
                            conn.send_headers(second, [(":method", "GET"), (":scheme", "https"),
                                                       (":authority", SNI), (":path", "/")], end_stream=True)
                    elif ev.stream_id == second:
                        conn.acknowledge_received_data(ev.flow_controlled_length, second)
                    else:
                        # Late frames of the cancelled stream: still count against the connection window.
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == second:
                    status2 = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == second:
                    return
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY {ev.error_code!r}")
            out = conn.data_to_send()
            if out:
                writer.write(out)

    try:
        await asyncio.wait_for(pump(), timeout)
    finally:
        writer.transport.abort()
    return got, status2
