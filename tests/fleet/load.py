"""Continuous client load through HAProxy for the fleet test, every failure
counted with its kind.

Three kinds of clients, each a thread with a source address of its own
(127.0.0.10 and up: the client address the app must see, from the PROXY
header HAProxy writes):

* `new`: one GET per new TCP + TLS connection (`Connection: close`), as fast
  as it goes: the clients that see a listener that stops accepting;
* `keepalive`: HTTP/1.1 GETs one after another on one TLS connection, a new
  connection when the server closed the old one between requests (or said
  `Connection: close`);
* `h2`: HTTP/2 GETs one after another on one connection (ALPN h2); after a
  GOAWAY the connection is left once its stream finished. A stream above
  the GOAWAY's last stream id was not processed (RFC 9113, 6.8): it is sent
  again on a new connection and counted as `h2_refused_retried`, not as a
  failure (every HTTP/2 client does this).

Every answer must be a 200 whose JSON body names a replica and carries the
client's own source address as X-Forwarded-For and X-Real-IP (the client
sends a forged X-Forwarded-For that must not get through). Anything else is
a failure: connect, handshake, reset, EOF before the response, timeout,
status, truncated body, wrong client address.

Bounded: every socket operation has a timeout (IO_TIMEOUT) and the load
stops by itself after `max_seconds`.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

IO_TIMEOUT = 10.0
# Linux: the source port is chosen at connect(), not at bind(), so that a
# client bound to its own address is not limited to one port per
# destination-free bind (IP_BIND_ADDRESS_NO_PORT, linux/in.h).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
FORGED_XFF = "203.0.113.66"


@dataclass
class Failure:
    client: str
    kind: str
    detail: str
    started: float  # monotonic, when the request (its connection) began
    ended: float
    wall: float = field(default_factory=time.time)  # when it was counted, to match the logs


@dataclass
class Answer:
    ended: float
    replica: str
    client: str


class Failed(Exception):
    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Refused(Exception):
    """An HTTP/2 stream the server said it did not process (GOAWAY)."""


def connect(port: int, source: str, ctx: ssl.SSLContext, sni: str) -> ssl.SSLSocket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        raw.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        raw.bind((source, 0))
        raw.settimeout(IO_TIMEOUT)
        try:
            raw.connect(("127.0.0.1", port))
        except OSError as e:
            raise Failed("connect", repr(e)) from e
        try:
            tls = ctx.wrap_socket(raw, server_hostname=sni)
        except (OSError, ssl.SSLError) as e:
            raise Failed("handshake", repr(e)) from e
        tls.settimeout(IO_TIMEOUT)
        return tls
    except BaseException:
        raw.close()
        raise


def peer_closed(sock: ssl.SSLSocket) -> bool:
    """Whether a kept-alive connection was closed (or got bytes) while idle."""
    if sock.pending():
        return True
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)


def wait_eof(sock: ssl.SSLSocket, timeout: float = 2.0) -> bool:
    """Reads to the end of stream (close_notify or FIN); False if none came."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        return True  # ended, if not cleanly: the answer was complete already
    finally:
        sock.settimeout(IO_TIMEOUT)


def check_body(body: bytes, source: str) -> str:
    """The replica that answered; raises Failed when the body is wrong."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise Failed("body", f"not JSON: {body[:120]!r}") from e
    if doc.get("xff") != source or doc.get("real_ip") != source:
        raise Failed(
            "client_address",
            f"app saw X-Forwarded-For {doc.get('xff')!r}, X-Real-IP {doc.get('real_ip')!r}, "
            f"client is {source} (replica {doc.get('replica')})",
        )
    if not doc.get("replica"):
        raise Failed("body", f"no replica named: {doc}")
    return doc["replica"]


def read_http1(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = sock.recv(65536)
        except TimeoutError as e:
            raise Failed("timeout", "no response head") from e
        except (OSError, ssl.SSLError) as e:
            raise Failed("reset" if not buf else "head_cut", repr(e)) from e
        if not chunk:
            raise Failed("eof_before_response" if not buf else "head_cut", repr(buf[:80]))
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as e:
        raise Failed("bad_response", lines[0][:120]) from e
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "-1"))
    if length < 0:
        raise Failed("bad_response", f"no content-length: {head[:200]!r}")
    while len(body) < length:
        try:
            chunk = sock.recv(65536)
        except (OSError, ssl.SSLError) as e:
            raise Failed("truncated", f"{len(body)}/{length}: {e!r}") from e
        if not chunk:
            raise Failed("truncated", f"{len(body)}/{length}")
        body += chunk
    return status, headers, body[:length]


def request_bytes(sni: str, close: bool) -> bytes:
    return (
        f"GET / HTTP/1.1\r\nHost: {sni}\r\nX-Forwarded-For: {FORGED_XFF}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode()


class GracefulH2Connection(h2.connection.H2Connection):
    """The h2 library ends the connection state at the first GOAWAY and
    refuses every frame after it. A graceful shutdown (RFC 9113, 6.8; hyper
    does it: GOAWAY with the highest stream id, a PING, then GOAWAY with the
    last stream it takes) goes on serving the streams up to the last id:
    keep processing them, as nghttp2, Go and browsers do."""

    def _receive_goaway_frame(self, frame):
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return frames, events


class H2Client:
    """HTTP/2 GETs one at a time on one connection (the h2 library)."""

    def __init__(self, sock: ssl.SSLSocket, sni: str):
        self.sock = sock
        self.sni = sni
        self.conn = GracefulH2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.goaway: int | None = None  # last stream id of a GOAWAY
        self.closed = False
        self.sock.sendall(self.conn.data_to_send())

    def usable(self) -> bool:
        """Reads what arrived while idle (a GOAWAY, an EOF)."""
        if self.closed or self.goaway is not None:
            return False
        try:
            while peer_closed(self.sock):
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                    return False
                self._events(self.conn.receive_data(data), None)
                out = self.conn.data_to_send()
                if out:
                    self.sock.sendall(out)
        except (OSError, ssl.SSLError):
            self.closed = True
        return not self.closed and self.goaway is None

    def _events(self, events, sid: int | None, state: dict | None = None) -> None:
        for ev in events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.last_stream_id
                if sid is not None and ev.last_stream_id is not None and sid > ev.last_stream_id:
                    raise Refused(f"GOAWAY last_stream_id={ev.last_stream_id}, stream {sid}")
            if state is None or getattr(ev, "stream_id", None) != sid:
                if isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                state["status"] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                state["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded):
                state["done"] = True
            elif isinstance(ev, h2.events.StreamReset):
                raise Failed("h2_stream_reset", f"RST_STREAM {ev.error_code!r}")

    def get(self) -> tuple[int, bytes]:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", self.sni),
                (":path", "/"),
                ("x-forwarded-for", FORGED_XFF),
            ],
            end_stream=True,
        )
        try:
            self.sock.sendall(self.conn.data_to_send())
        except (OSError, ssl.SSLError) as e:
            self.closed = True
            raise Failed("send", repr(e)) from e
        state = {"status": None, "body": b"", "done": False}
        while not state["done"]:
            try:
                data = self.sock.recv(65536)
            except TimeoutError as e:
                self.closed = True
                raise Failed("timeout", f"stream {sid}") from e
            except (OSError, ssl.SSLError) as e:
                self.closed = True
                raise Failed("reset", f"stream {sid}: {e!r}") from e
            if not data:
                self.closed = True
                if self.goaway is not None and sid > self.goaway:
                    raise Refused(f"EOF after GOAWAY last_stream_id={self.goaway}, stream {sid}")
                raise Failed("eof_before_response" if state["status"] is None else "truncated", f"stream {sid}")
            try:
                self._events(self.conn.receive_data(data), sid, state)
            except h2.exceptions.ProtocolError as e:
                self.closed = True
                raise Failed("h2_protocol", repr(e)) from e
            out = self.conn.data_to_send()
            if out:
                try:
                    self.sock.sendall(out)
                except (OSError, ssl.SSLError):
                    pass  # the answer may still be complete
        return state["status"], state["body"]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class Load:
    port: int
    ctx: ssl.SSLContext  # HTTP/1.1 clients: trusts the replicas' CA, ALPN http/1.1
    ctx_h2: ssl.SSLContext  # HTTP/2 clients: ALPN h2
    sni: str
    new: int = 4
    keepalive: int = 2
    h2: int = 2
    max_seconds: float = 120.0
    first_source: int = 10  # 127.0.0.<first_source> and up
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    answers: list[list[Answer]] = field(default_factory=list)
    failures: list[list[Failure]] = field(default_factory=list)
    events: list[Counter] = field(default_factory=list)  # per client: reconnects, retries
    started: float = 0.0
    stopped: float = 0.0

    def start(self) -> "Load":
        self.started = time.monotonic()
        deadline = self.started + self.max_seconds
        kinds = ["new"] * self.new + ["keepalive"] * self.keepalive + ["h2"] * self.h2
        for i, kind in enumerate(kinds):
            source = f"127.0.0.{self.first_source + i}"
            answers: list[Answer] = []
            failures: list[Failure] = []
            events: Counter = Counter()
            self.answers.append(answers)
            self.failures.append(failures)
            self.events.append(events)
            target = {"new": self._new, "keepalive": self._keepalive, "h2": self._h2}[kind]
            t = threading.Thread(
                target=target,
                args=(f"{kind}@{source}", source, deadline, answers, failures, events),
                name=f"load-{kind}-{i}",
                daemon=True,
            )
            self.threads.append(t)
        for t in self.threads:
            t.start()
        return self

    def _running(self, deadline: float) -> bool:
        return not self.stop_event.is_set() and time.monotonic() < deadline

    def _new(self, name, source, deadline, answers, failures, events) -> None:
        req = request_bytes(self.sni, close=True)
        while self._running(deadline):
            t0 = time.monotonic()
            sock = None
            try:
                sock = connect(self.port, source, self.ctx, self.sni)
                try:
                    sock.sendall(req)
                except (OSError, ssl.SSLError) as e:
                    raise Failed("send", repr(e)) from e
                handshaken = time.monotonic()
                port = sock.getsockname()[1]
                try:
                    status, _, body = read_http1(sock)
                except Failed as f:
                    raise Failed(
                        f.kind,
                        f"{f.detail} (source port {port}, {time.monotonic() - handshaken:.3f}s after the handshake)",
                    ) from f
                if status != 200:
                    raise Failed(f"status_{status}", body[:200].decode(errors="replace"))
                answers.append(Answer(time.monotonic(), check_body(body, source), name))
                # The server closes (Connection: close): wait for it, so that
                # HAProxy's log shows only abnormal sessions.
                if not wait_eof(sock):
                    events["no_close_after_connection_close"] += 1
            except Failed as f:
                failures.append(Failure(name, f.kind, f.detail, t0, time.monotonic()))
            finally:
                if sock is not None:
                    sock.close()

    def _keepalive(self, name, source, deadline, answers, failures, events) -> None:
        req = request_bytes(self.sni, close=False)
        sock: ssl.SSLSocket | None = None
        while self._running(deadline):
            t0 = time.monotonic()
            try:
                if sock is not None and peer_closed(sock):
                    # Closed by the server between two requests: not a
                    # failure; a client opens a new connection.
                    events["closed_while_idle"] += 1
                    sock.close()
                    sock = None
                reused = sock is not None
                if sock is None:
                    sock = connect(self.port, source, self.ctx, self.sni)
                    events["connections"] += 1
                try:
                    sock.sendall(req)
                except (OSError, ssl.SSLError) as e:
                    raise Failed("send_on_reused" if reused else "send", repr(e)) from e
                try:
                    status, headers, body = read_http1(sock)
                except Failed as f:
                    if reused and f.kind in ("eof_before_response", "reset"):
                        # Sent on a kept-alive connection the server closed
                        # meanwhile, no byte of answer: the race RFC 9110
                        # 9.2.2 lets a client retry an idempotent request
                        # after. Counted as a failure, with its own kind.
                        raise Failed(f"{f.kind}_on_reused", f.detail) from f
                    raise
                if status != 200:
                    raise Failed(f"status_{status}", body[:200].decode(errors="replace"))
                answers.append(Answer(time.monotonic(), check_body(body, source), name))
                if headers.get("connection", "").lower() == "close":
                    events["connection_close_header"] += 1
                    sock.close()
                    sock = None
            except Failed as f:
                failures.append(Failure(name, f.kind, f.detail, t0, time.monotonic()))
                if sock is not None:
                    sock.close()
                    sock = None
        if sock is not None:
            sock.close()

    def _h2(self, name, source, deadline, answers, failures, events) -> None:
        ctx = self.ctx_h2
        client: H2Client | None = None
        retry = False
        while self._running(deadline):
            t0 = time.monotonic()
            try:
                if client is not None and not client.usable():
                    events["left_after_goaway_or_close"] += 1
                    client.close()
                    client = None
                if client is None:
                    sock = connect(self.port, source, ctx, self.sni)
                    if sock.selected_alpn_protocol() != "h2":
                        sock.close()
                        raise Failed("alpn", f"server chose {sock.selected_alpn_protocol()!r}")
                    try:
                        client = H2Client(sock, self.sni)
                    except (OSError, ssl.SSLError) as e:
                        sock.close()
                        raise Failed("send", repr(e)) from e
                    events["connections"] += 1
                status, body = client.get()
                if status != 200:
                    raise Failed(f"status_{status}", body[:200].decode(errors="replace"))
                answers.append(Answer(time.monotonic(), check_body(body, source), name))
                retry = False
            except Refused:
                # Not processed by the server: sent again on a new connection.
                events["h2_refused_retried"] += 1
                if retry:
                    failures.append(Failure(name, "h2_refused_twice", "", t0, time.monotonic()))
                retry = True
                client.close()
                client = None
            except Failed as f:
                failures.append(Failure(name, f.kind, f.detail, t0, time.monotonic()))
                if client is not None:
                    client.close()
                    client = None
        if client is not None:
            client.close()

    # ---- reading the results -------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=IO_TIMEOUT * 2 + 5)
        self.stopped = time.monotonic()
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"load clients did not stop: {alive}"

    def all_answers(self) -> list[Answer]:
        return [a for lst in self.answers for a in list(lst)]

    def all_failures(self) -> list[Failure]:
        return sorted((f for lst in self.failures for f in list(lst)), key=lambda f: f.started)

    def since(self, t0: float) -> list[Answer]:
        """The answers that arrived from `t0` on (newest last per client)."""
        out = []
        for lst in self.answers:
            n = len(lst)
            i = n
            while i > 0 and lst[i - 1].ended >= t0:
                i -= 1
            out.extend(lst[i:n])
        return out

    def replicas_since(self, t0: float) -> Counter:
        return Counter(a.replica for a in self.since(t0))

    def clients_since(self, t0: float) -> Counter:
        return Counter(a.client for a in self.since(t0))

    def summary(self) -> dict:
        answers = self.all_answers()
        failures = self.all_failures()
        by_client_kind: Counter = Counter()
        for a in answers:
            by_client_kind[a.client.split("@")[0]] += 1
        events: Counter = Counter()
        for e in self.events:
            events.update(e)
        seconds = (self.stopped or time.monotonic()) - self.started
        return {
            "seconds": round(seconds, 1),
            "requests_ok": len(answers),
            "requests_failed": len(failures),
            "ok_by_client_kind": dict(by_client_kind),
            "ok_by_replica": dict(Counter(a.replica for a in answers)),
            "failures_by_kind": dict(Counter(f.kind for f in failures)),
            "failed_by_client_kind": dict(Counter(f.client.split("@")[0] for f in failures)),
            "events": dict(events),
            "failures_first": [
                {
                    "client": f.client,
                    "kind": f.kind,
                    "detail": f.detail[:300],
                    "at": round(f.started - self.started, 3),
                    "took": round(f.ended - f.started, 3),
                    "utc": time.strftime("%H:%M:%S", time.gmtime(f.wall)) + f"{f.wall % 1:.3f}"[1:],
                }
                for f in failures[:20]
            ],
        }
