"""A small synchronous HTTP/3 client for the end-to-end tests, on aioquic.

No asyncio: one UDP socket, aioquic's sans-I/O ``QuicConnection`` and
``H3Connection``, and a loop that is always bounded by a deadline. That keeps
the tests' control flow plain (send a request, do something to the server,
read the response) and lets them do what a well-behaved client would not
(reset streams at once, keep a request in flight across a SIGTERM).

    with H3Client.connect(port, cafile=ca) as c:
        r = c.request("GET", "/whoami")
        assert r.status == 200, r

What it tells a test beyond the response:

* ``handshake``: aioquic's HandshakeCompleted event (ALPN, resumption, 0-RTT);
* ``negotiated_group``: the key exchange group of the server's ServerHello
  (tlsfront's spelling: ``X25519``, ``secp256r1``, ...);
* ``goaway_ids``: every HTTP/3 GOAWAY the server sent on its control stream
  (aioquic 1.7.2 parses and drops them, so they are read here);
* ``terminated``: the ConnectionTerminated event once the connection is closed.

``groups`` chooses the key exchange groups offered (aioquic 1.7.2 offers
secp256r1, secp384r1, X25519 and X448, with a key share for each, and cannot
answer a HelloRetryRequest; it has no X25519MLKEM768). It is set on aioquic's
TLS context, whose list is private: if aioquic changes that, ``connect`` raises
instead of silently offering its defaults.
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass, field

from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic import tls

# HTTP/3 error codes (RFC 9114 section 8.1) used by the tests.
H3_NO_ERROR = 0x100
H3_REQUEST_CANCELLED = 0x10C
H3_FRAME_GOAWAY = 0x7

# aioquic's group enum -> tlsfront's names (config `tls.key_exchange`, access log `kx=`).
GROUP_NAMES = {
    0x001D: "X25519",
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001E: "X448",
    0x11EC: "X25519MLKEM768",
}
NAME_TO_GROUP = {v: k for k, v in GROUP_NAMES.items()}


class H3Timeout(TimeoutError):
    pass


@dataclass
class H3Response:
    stream_id: int
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    # QUIC RESET_STREAM error code the server sent on this stream, if any.
    reset_code: int | None = None
    # STOP_SENDING error code (the server does not want the rest of our body).
    stop_code: int | None = None
    # The connection closed before the response ended (ConnectionTerminated).
    connection_error: qe.ConnectionTerminated | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def complete(self) -> bool:
        return self.ended or self.reset_code is not None or self.connection_error is not None

    def __repr__(self) -> str:  # short, for assertion messages
        body = self.body[:300]
        return (
            f"H3Response(stream={self.stream_id}, status={self.status}, ended={self.ended}, "
            f"reset={self.reset_code}, stop={self.stop_code}, conn_error={self.connection_error}, "
            f"headers={self.headers[:30]}, body[:300]={body!r}, body_len={len(self.body)})"
        )


class _Connection(QuicConnection):
    """QuicConnection that offers chosen groups and records the server's."""

    def __init__(self, *args, groups: list[int] | None = None, **kwargs):
        self._offer_groups = groups
        self.negotiated_group: int | None = None
        super().__init__(*args, **kwargs)

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        ctx = self.tls
        if self._offer_groups is not None:
            if not isinstance(getattr(ctx, "_supported_groups", None), list):
                raise RuntimeError("this aioquic has no tls.Context._supported_groups: cannot choose groups")
            ctx._supported_groups = list(self._offer_groups)
        original = ctx._client_handle_hello

        def handle_hello(input_buf: Buffer, output_buf: Buffer) -> None:
            original(input_buf, output_buf)
            # input_buf.data is the ServerHello message just consumed.
            try:
                hello = tls.pull_server_hello(Buffer(data=input_buf.data))
                if hello.key_share is not None:
                    self.negotiated_group = hello.key_share[0]
            except Exception:  # the handshake itself goes on as aioquic decided
                pass

        ctx._client_handle_hello = handle_hello


def _pull_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    if pos >= len(data):
        return None
    first = data[pos]
    length = 1 << (first >> 6)
    if pos + length > len(data):
        return None
    value = first & 0x3F
    for b in data[pos + 1 : pos + length]:
        value = (value << 8) | b
    return value, pos + length


class H3Client:
    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        server_name: str = "localhost",
        cafile: str | os.PathLike | None = None,
        verify: bool = True,
        groups: list[str] | None = None,
        session_ticket: tls.SessionTicket | None = None,
        local_port: int = 0,
        idle_timeout: float = 30.0,
        alpn: list[str] | None = None,
    ):
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=list(alpn or H3_ALPN),
            server_name=server_name,
            idle_timeout=idle_timeout,
            max_data=16 * 1024 * 1024,
            max_stream_data=8 * 1024 * 1024,
        )
        if not verify:
            import ssl

            config.verify_mode = ssl.CERT_NONE
        elif cafile is not None:
            config.load_verify_locations(cafile=str(cafile))
        if session_ticket is not None:
            config.session_ticket = session_ticket
        offered = None
        if groups is not None:
            offered = [NAME_TO_GROUP[g] for g in groups]
        self.session_tickets: list[tls.SessionTicket] = []
        self.quic = _Connection(
            configuration=config,
            groups=offered,
            session_ticket_handler=self.session_tickets.append,
        )
        self.h3 = H3Connection(self.quic)
        self.addr = (host, port)
        self.server_name = server_name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", local_port))
        self.sock.setblocking(False)
        self.handshake: qe.HandshakeCompleted | None = None
        self.terminated: qe.ConnectionTerminated | None = None
        self.goaway_ids: list[int] = []
        self.responses: dict[int, H3Response] = {}
        self._uni_buffers: dict[int, bytearray] = {}
        self._uni_parsed: dict[int, int] = {}
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self._started = False

    # ------------------------------------------------------------------ setup

    @classmethod
    def connect(cls, port: int, timeout: float = 10.0, wait: bool = True, **kwargs) -> "H3Client":
        """Opens a connection; with wait=True returns once the handshake is done
        (raises H3Timeout, or ConnectionError when the server closed it)."""
        c = cls(port, **kwargs)
        try:
            c.start()
            if wait:
                c.wait_handshake(timeout)
        except BaseException:
            c.close(timeout=0.2)
            raise
        return c

    def start(self) -> None:
        self.quic.connect(self.addr, now=time.monotonic())
        self._started = True
        self._flush()

    def wait_handshake(self, timeout: float = 10.0) -> qe.HandshakeCompleted:
        self.pump(timeout, until=lambda: self.handshake is not None or self.terminated is not None)
        if self.handshake is None:
            raise ConnectionError(f"QUIC handshake failed: {self.terminated}")
        return self.handshake

    @property
    def negotiated_group(self) -> str | None:
        g = self.quic.negotiated_group
        return None if g is None else GROUP_NAMES.get(g, hex(g))

    @property
    def alpn(self) -> str | None:
        return self.handshake.alpn_protocol if self.handshake else None

    def __enter__(self) -> "H3Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def send_request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | dict[str, str] | None = None,
        body: bytes | None = None,
        authority: str | None = None,
        content_length: bool = True,
        end_stream: bool = True,
    ) -> int:
        """Sends a request (headers, then body if any) and returns its stream id."""
        if authority is None:
            authority = f"{self.server_name}:{self.addr[1]}"
        if isinstance(headers, dict):
            headers = list(headers.items())
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        for k, v in headers or []:
            fields.append((k.lower().encode(), v.encode() if isinstance(v, str) else v))
        if body is not None and content_length and not any(k == b"content-length" for k, _ in fields):
            fields.append((b"content-length", str(len(body)).encode()))
        stream_id = self.quic.get_next_available_stream_id()
        self.responses[stream_id] = H3Response(stream_id=stream_id)
        only_headers = body is None and end_stream
        self.h3.send_headers(stream_id, fields, end_stream=only_headers)
        if body is not None:
            self.h3.send_data(stream_id, body, end_stream=end_stream)
        self._flush()
        return stream_id

    def wait_response(self, stream_id: int, timeout: float = 10.0) -> H3Response:
        resp = self.responses[stream_id]
        self.pump(timeout, until=lambda: resp.complete)
        return resp

    def request(self, method: str, path: str, timeout: float = 10.0, **kwargs) -> H3Response:
        sid = self.send_request(method, path, **kwargs)
        return self.wait_response(sid, timeout)

    def get(self, path: str, timeout: float = 10.0, **kwargs) -> H3Response:
        return self.request("GET", path, timeout=timeout, **kwargs)

    def reset(self, stream_id: int, error_code: int = H3_REQUEST_CANCELLED) -> None:
        """Abandons a request: RESET_STREAM on our side, STOP_SENDING on theirs."""
        try:
            self.quic.reset_stream(stream_id, error_code)
        except Exception:
            pass  # already ended in that direction
        try:
            self.quic.stop_stream(stream_id, error_code)
        except Exception:
            pass
        self._flush()

    # ------------------------------------------------------------------ I/O loop

    def _flush(self) -> None:
        for data, addr in self.quic.datagrams_to_send(now=time.monotonic()):
            try:
                self.sock.sendto(data, addr)
                self.datagrams_sent += 1
            except (BlockingIOError, InterruptedError):
                # Kernel buffer full for a moment: QUIC's loss recovery resends.
                pass
            except OSError:
                pass  # e.g. ECONNREFUSED from an ICMP: the server is gone

    def _receive(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP port unreachable surfaces here
            self.datagrams_received += 1
            self.quic.receive_datagram(data, addr, now=time.monotonic())

    def pump(self, timeout: float, until=None) -> None:
        """Runs the connection for up to `timeout` seconds, or until `until()`
        is true (then returns at once). Raises H3Timeout if `until` was given
        and never became true."""
        deadline = time.monotonic() + timeout
        while True:
            self._process_events()
            self._flush()
            if until is not None and until():
                return
            now = time.monotonic()
            if now >= deadline:
                if until is None:
                    return
                raise H3Timeout(
                    f"no answer within {timeout}s (handshake={self.handshake is not None}, "
                    f"terminated={self.terminated}, goaway={self.goaway_ids}, "
                    f"sent={self.datagrams_sent}, received={self.datagrams_received})"
                )
            if self.terminated is not None and until is not None:
                # Nothing more will come on a closed connection.
                raise ConnectionError(f"connection closed: {self.terminated}")
            wait = deadline - now
            timer = self.quic.get_timer()
            if timer is not None:
                wait = max(0.0, min(wait, timer - now))
            ready, _, _ = select.select([self.sock], [], [], min(wait, 0.5))
            if ready:
                self._receive()
            now = time.monotonic()
            timer = self.quic.get_timer()
            if timer is not None and now >= timer:
                self.quic.handle_timer(now)

    def _process_events(self) -> None:
        while True:
            event = self.quic.next_event()
            if event is None:
                return
            if isinstance(event, qe.HandshakeCompleted):
                self.handshake = event
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = event
                for resp in self.responses.values():
                    if not resp.complete:
                        resp.connection_error = event
            elif isinstance(event, qe.StreamReset):
                resp = self.responses.get(event.stream_id)
                if resp is not None:
                    resp.reset_code = event.error_code
            elif isinstance(event, qe.StopSendingReceived):
                resp = self.responses.get(event.stream_id)
                if resp is not None:
                    resp.stop_code = event.error_code
            elif isinstance(event, qe.StreamDataReceived) and event.stream_id % 4 == 3:
                self._read_server_uni(event.stream_id, event.data)
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)

    def _h3_event(self, event) -> None:
        resp = self.responses.get(getattr(event, "stream_id", -1))
        if resp is None:
            return
        if isinstance(event, HeadersReceived):
            fields = [(k.decode(), v.decode(errors="replace")) for k, v in event.headers]
            status = [v for k, v in fields if k == ":status"]
            if resp.status is None and status:
                code = int(status[0])
                if code >= 200:  # interim (1xx) responses are skipped
                    resp.status = code
                    resp.headers = [(k, v) for k, v in fields if not k.startswith(":")]
            elif resp.status is not None:
                resp.trailers = fields
            if event.stream_ended:
                resp.ended = True
        elif isinstance(event, DataReceived):
            resp.body += event.data
            if event.stream_ended:
                resp.ended = True

    def _read_server_uni(self, stream_id: int, data: bytes) -> None:
        """Finds GOAWAY frames on the server's control stream (type 0x00)."""
        buf = self._uni_buffers.setdefault(stream_id, bytearray())
        buf += data
        pos = self._uni_parsed.get(stream_id, 0)
        raw = bytes(buf)
        if pos == 0:
            st = _pull_varint(raw, 0)
            if st is None:
                return
            if st[0] != 0x00:  # not the control stream: stop looking at it
                self._uni_parsed[stream_id] = -1
                return
            pos = st[1]
        if pos < 0:
            return
        while True:
            ft = _pull_varint(raw, pos)
            if ft is None:
                break
            fl = _pull_varint(raw, ft[1])
            if fl is None:
                break
            end = fl[1] + fl[0]
            if end > len(raw):
                break
            if ft[0] == H3_FRAME_GOAWAY:
                v = _pull_varint(raw, fl[1])
                if v is not None:
                    self.goaway_ids.append(v[0])
            pos = end
        self._uni_parsed[stream_id] = pos

    # ------------------------------------------------------------------ teardown

    def close(self, timeout: float = 1.0) -> None:
        if self.sock.fileno() < 0:
            return
        try:
            if self._started and self.terminated is None:
                self.quic.close(error_code=H3_NO_ERROR)
                self._flush()
                try:
                    self.pump(timeout, until=lambda: self.terminated is not None)
                except (H3Timeout, ConnectionError):
                    pass
        finally:
            self.sock.close()


def h3_request(port: int, method: str, path: str, timeout: float = 10.0, **kwargs) -> tuple[H3Response, H3Client]:
    """One request on a new connection, which is closed afterwards; returns the
    response and the (closed) client for its handshake facts."""
    conn_keys = {"host", "server_name", "cafile", "verify", "groups", "session_ticket", "local_port", "idle_timeout", "alpn"}
    ckw = {k: kwargs.pop(k) for k in list(kwargs) if k in conn_keys}
    with H3Client.connect(port, timeout=timeout, **ckw) as c:
        r = c.request(method, path, timeout=timeout, **kwargs)
    return r, c
