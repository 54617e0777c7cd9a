"""Small asyncio HTTP/1.1 upstreams for the long suite, one mode per process:

    python tests/long/upstreams.py MODE [--port N] [--idle-ms MS]

prints `PORT <n>` on stdout once listening on 127.0.0.1, then serves until
killed. Modes:

  ok         keep-alive server: GET / -> "hello\\n"; GET /bytes?n=N -> N bytes
             of common.PATTERN with Content-Length; GET /chunked?n=N -> the same,
             chunked; POST|PUT /upload -> reads the body, answers
             {"bytes": n}; anything else -> 200 "ok\\n"
  reset      answers Content-Length: 1000000, sends 1000 bytes, then RST
  fin        answers Content-Length: 1000000, sends 1000 bytes, then a clean close (FIN)
  chunked-reset  answers chunked, sends 1000 bytes in one chunk, then RST
  hang       reads the request and never answers (holds the connection)
  garbage    reads the request, answers random non-HTTP bytes, closes
  oneshot    answers the first request on a connection as keep-alive (no
             Connection: close), then closes the connection --idle-ms later
             without reading or answering anything else
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PATTERN  # noqa: E402

MAX_HEAD = 64 * 1024


async def read_request(reader: asyncio.StreamReader):
    """(method, target, headers) or None on EOF before a request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return method, target, headers


async def read_body(reader: asyncio.StreamReader, headers: dict) -> int:
    """Reads (and discards) the request body; returns its length. Raises
    IncompleteReadError when the peer closes mid-body."""
    n = 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return n
            while size:
                data = await reader.read(min(size, 1 << 16))
                if not data:
                    raise asyncio.IncompleteReadError(b"", size)
                n += len(data)
                size -= len(data)
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    while length:
        data = await reader.read(min(length, 1 << 16))
        if not data:
            raise asyncio.IncompleteReadError(b"", length)
        n += len(data)
        length -= len(data)
    return n


def head(status: str, headers: dict) -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def await_ready(reader: asyncio.StreamReader) -> bool:
    """Whether bytes are waiting on the socket right now (without reading them)."""
    sock = reader._transport.get_extra_info("socket") if reader._transport else None  # noqa: SLF001
    if sock is None:
        return False
    try:
        return len(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)) > 0
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False


def rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def send_pattern(writer: asyncio.StreamWriter, n: int, chunked: bool) -> None:
    sent = 0
    while sent < n:
        k = min(n - sent, len(PATTERN))
        data = PATTERN[:k]
        writer.write(b"%x\r\n%s\r\n" % (k, data) if chunked else data)
        sent += k
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def serve_ok(reader, writer, args) -> None:
    while True:
        req = await read_request(reader)
        if req is None:
            return
        method, target, headers = req
        url = urlsplit(target)
        q = parse_qs(url.query)
        try:
            n = await read_body(reader, headers)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return  # the proxy gave up on this request (client vanished)
        close = headers.get("connection", "").lower() == "close"
        if url.path in ("/bytes", "/chunked"):
            size = int(q.get("n", ["0"])[0])
            chunked = url.path == "/chunked"
            h = {"Content-Type": "application/octet-stream"}
            h["Transfer-Encoding" if chunked else "Content-Length"] = "chunked" if chunked else str(size)
            writer.write(head("200 OK", h))
            await send_pattern(writer, size, chunked)
        else:
            if url.path == "/upload":
                body = json.dumps({"bytes": n}).encode()
                ctype = "application/json"
            elif url.path == "/":
                body, ctype = b"hello\n", "text/plain"
            else:
                body, ctype = b"ok\n", "text/plain"
            writer.write(head("200 OK", {"Content-Type": ctype, "Content-Length": len(body)}) + body)
            await writer.drain()
        if close:
            return


async def serve_fault(reader, writer, args) -> None:
    req = await read_request(reader)
    if req is None:
        return
    _, _, headers = req
    mode = args.mode
    if mode == "hang":
        # Hold the connection (reading, so a close is noticed) and never answer.
        while await reader.read(65536):
            pass
        return
    if mode == "garbage":
        writer.write(b"\x00\xffNOT HTTP AT ALL\r\n" + os.urandom(2048))
        await writer.drain()
        writer.close()
        return
    if mode in ("reset", "fin"):
        writer.write(head("200 OK", {"Content-Type": "application/octet-stream", "Content-Length": 1_000_000}))
        writer.write(PATTERN[:1000])
        await writer.drain()
        await asyncio.sleep(0.05)
        if mode == "reset":
            rst(writer)
        else:
            writer.close()
        return
    if mode == "chunked-reset":
        writer.write(head("200 OK", {"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"}))
        writer.write(b"%x\r\n%s\r\n" % (1000, PATTERN[:1000]))
        await writer.drain()
        await asyncio.sleep(0.05)
        rst(writer)
        return
    if mode == "oneshot":
        try:
            await read_body(reader, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        body = b"hello\n"
        writer.write(head("200 OK", {"Content-Type": "text/plain", "Content-Length": len(body)}) + body)
        await writer.drain()
        await asyncio.sleep(args.idle_ms / 1000.0)
        # Whatever arrived meanwhile stays unread: the kernel answers it with RST.
        if reader._buffer or not reader.at_eof() and await_ready(reader):
            print("DROPPED a request that arrived on a connection being closed", file=sys.stderr, flush=True)
        writer.close()
        return
    raise SystemExit(f"unknown mode {mode}")


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--idle-ms", type=float, default=50.0)
    args = p.parse_args()
    serve = serve_ok if args.mode == "ok" else serve_fault

    async def handle(reader, writer):
        try:
            await serve(reader, writer, args)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=4096, limit=MAX_HEAD,
                                        reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
