"""pebble, and an ARI/profiles stand-in in front of it, for tests/e2e/test_acme_ari.py.

Debian's pebble 2.4 has neither ACME Renewal Information (RFC 9773) nor
profiles. `AriStandIn` is a small HTTPS server on 127.0.0.1 that tlsfront is
given as its `[acme] directory`:

    tlsfront --HTTPS--> AriStandIn 127.0.0.1:S --HTTPS--> pebble 127.0.0.1:P
                        GET /dir              pebble's directory, plus
                                              "renewalInfo" and meta.profiles
                        GET /renewal-info/ID  the window the test set (ARI)
                        anything else         forwarded to pebble

Forwarding keeps the request's path and sends `Host: 127.0.0.1:S`: pebble
checks that a JWS's protected "url" is the URL the request came to, which it
builds from the Host header and the path, and it builds every URL it hands
out (orders, authorizations, finalize, certificate, account) from the Host
header too, so after the directory every request of the client comes to the
stand-in by itself. The JWS bodies are forwarded byte for byte (signatures
stay valid); pebble 2.4 decodes a newOrder payload with Go's encoding/json,
which ignores fields it does not know (`replaces`, `profile`).

One thing pebble cannot do that the client relies on: RFC 9773 says a server
that accepts `replaces` MUST reflect it in the order it returns, and
instant-acme (0.8) fails the order ("replaces field mismatch") when it is not
there. So the stand-in adds `replaces` and `profile`, as the request had
them, to the order objects pebble returns (newOrder, and every later answer
carrying that order's finalize URL). Responses are not signed; nothing else
is changed.

Every newOrder payload (the base64url "payload" of the flattened JWS,
decoded, no signature check) and every renewal-info request (time, certID) is
recorded for the test. The window and Retry-After of the renewal-info answers
are attributes the test changes while tlsfront runs (the server runs in a
thread of the test process).

The stand-in's and pebble's HTTPS certificates are made here with the
`cryptography` package (pinned in requirements.txt), each from its own CA;
`AriStandIn.trust_pem` holds both, for `acme.directory_ca`.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# ---------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def held_port() -> int:
    """A loopback port for a server started next, as tests/acme.rs's
    free_port: left in TIME_WAIT, so neither `bind(0)` nor an outgoing
    connection gets it meanwhile, while a server with SO_REUSEADDR (tokio,
    Go) binds it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As Rust's std listener: the TIME_WAIT socket must have had it too.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the accepted side closes first and keeps TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    return port


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(int(t), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def serial_der_content(serial: int) -> bytes:
    """The content octets of the DER INTEGER of a (positive) serial: minimal
    big-endian two's complement, so a leading 0x00 when the high bit is set."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def cert_id(cert: x509.Certificate | bytes) -> str:
    """RFC 9773 section 4.1 certificate identifier: base64url(AKI
    keyIdentifier) "." base64url(serial DER content octets), no padding."""
    if isinstance(cert, (bytes, bytearray)):
        cert = load_cert(cert)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier, "certificate has an AKI without keyIdentifier"
    return f"{b64url(aki.key_identifier)}.{b64url(serial_der_content(cert.serial_number))}"


def load_cert(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(ca: x509.Certificate, ca_key, dir: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost, signed by `ca`:
    (cert.pem, key.pem) in `dir`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = dir / "cert.pem", dir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def https_context(server_cert: Path, server_key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(server_cert), str(server_key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _read(path: Path, limit: int = 1 << 20) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return data[-limit:].decode(errors="replace")


def _stop(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- pebble


class Pebble:
    """pebble + pebble-challtestsrv (Debian package `pebble`), started as
    tests/acme.rs starts them: challtestsrv answers every DNS question with
    127.0.0.1; pebble validates tls-alpn-01 on `tls_port` (where tlsfront
    listens) and http-01 on `http_port` (unused here)."""

    def __init__(self, dir: Path):
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.port = held_port()
        self.management = held_port()
        self.dns = held_port()
        self.tls_port = held_port()
        self.http_port = held_port()
        self.log = dir / "pebble.log"
        self.proc: subprocess.Popen | None = None
        self.challtest: subprocess.Popen | None = None
        ca, ca_key = make_ca("pebble HTTPS test CA")
        self.ca = dir / "https-ca.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert, self.key = make_leaf(ca, ca_key, dir / "https")

    def start(self) -> "Pebble":
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(self.cert),
                "privateKey": str(self.key),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.dir / "pebble.json").write_text(json.dumps(config))
        with open(self.dir / "challtestsrv.log", "wb") as logf:
            self.challtest = subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv4", "127.0.0.1",
                    "-defaultIPv6", "",
                    "-dns01", f"127.0.0.1:{self.dns}",
                    "-management", f"127.0.0.1:{held_port()}",
                    "-http01", "",
                    "-https01", "",
                    "-tlsalpn01", "",
                ],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                ["pebble", "-config", str(self.dir / "pebble.json"), "-dnsserver", f"127.0.0.1:{self.dns}"],
                env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                for port in (self.port, self.management):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()  # challtestsrv too
                    raise RuntimeError(f"pebble did not start:\n{_read(self.log)[-3000:]}")
                time.sleep(0.05)
        return self

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def root(self) -> Path:
        """pebble's issuing root (management interface) as a PEM file."""
        with urllib.request.urlopen(
            f"https://127.0.0.1:{self.management}/roots/0", context=self.client_context(), timeout=10
        ) as r:
            pem = r.read().decode()
        path = self.dir / "root.pem"
        path.write_text(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
        return path

    def orders(self) -> int:
        return _read(self.log).count("Added order")

    def log_text(self) -> str:
        return _read(self.log)

    def stop(self) -> None:
        _stop(self.proc)
        _stop(self.challtest)


# ---------------------------------------------------------------- the stand-in


@dataclass
class Recorded:
    at: float  # time.time()
    what: str  # certID (renewal-info) or the decoded payload (newOrder)
    payload: dict = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, tls: ssl.SSLContext, standin: "AriStandIn"):
        super().__init__(addr, handler)
        self.tls = tls
        self.standin = standin

    def finish_request(self, request, client_address):
        # The TLS handshake in the connection's own thread, not the accept loop.
        request.settimeout(15)
        try:
            tls = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.standin._note(f"TLS handshake from {client_address} failed: {exc}")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's name
        self.server.standin._note(f"{self.command} {self.path}: " + format % args)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def do_GET(self):
        s = self.server.standin
        if self.path == "/dir":
            self._send(200, [("Content-Type", "application/json")], s._directory())
        elif self.path.startswith("/renewal-info/"):
            status, headers, body = s._renewal_info(self.path[len("/renewal-info/"):])
            self._send(status, headers, body)
        else:
            self._forward(b"")

    def do_HEAD(self):
        self._forward(b"")

    def do_POST(self):
        self._forward(self._body())

    def _forward(self, body: bytes) -> None:
        status, headers, out = self.server.standin._forward(self.command, self.path, self.headers, body)
        self._send(status, headers, out)


class AriStandIn:
    """See the module docstring. State the test may change at any time:

    ari            offer "renewalInfo" in the directory (False: plain pebble)
    profiles       meta.profiles of the directory (None: no "profiles")
    window         (start, end) unix seconds answered for every certID ...
    windows        ... unless this dict has one for it
    retry_after    the Retry-After header of renewal-info answers (None: none)
    explanation_url  "explanationURL" of renewal-info answers (None: none)

    Recorded: `orders` (newOrder payloads), `renewal_requests` (certIDs)."""

    DEFAULT_PROFILES = {
        "classic": "The same profile you're accustomed to",
        "shortlived": "A short-lived certificate profile",
    }

    def __init__(self, pebble: Pebble, dir: Path):
        self.pebble = pebble
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        ca, ca_key = make_ca("ARI stand-in test CA")
        self.ca = dir / "standin-ca.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        cert, key = make_leaf(ca, ca_key, dir / "https")
        # acme.directory_ca: both pebble's HTTPS CA and the stand-in's.
        self.trust_pem = dir / "directory-ca.pem"
        self.trust_pem.write_text(self.ca.read_text() + pebble.ca.read_text())
        self._tls = https_context(cert, key)
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._new_order_path = "/order-plz"
        self.reset()

    # ---- state

    def reset(self) -> None:
        now = time.time()
        with self._lock:
            self.ari = True
            self.profiles: dict[str, str] | None = dict(self.DEFAULT_PROFILES)
            self.window = (now + 10 * 86400, now + 12 * 86400)
            self.windows: dict[str, tuple[float, float]] = {}
            self.retry_after: str | None = "1"
            self.explanation_url: str | None = None
            self.orders: list[Recorded] = []
            self.renewal_requests: list[Recorded] = []
            self.notes: list[str] = []
            self._order_extras: dict[str, dict] = {}  # finalize URL -> replaces/profile

    def set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                if not hasattr(self, k):
                    raise AttributeError(k)
                setattr(self, k, v)

    def set_window(self, cid: str | None, start: float, end: float) -> None:
        """The window answered for `cid` (None: for every certID without its own)."""
        with self._lock:
            if cid is None:
                self.window = (start, end)
            else:
                self.windows[cid] = (start, end)

    def order_payloads(self) -> list[dict]:
        with self._lock:
            return [o.payload for o in self.orders]

    def renewal_info_requests(self, cid: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.renewal_requests if cid is None or r.what == cid]

    def _note(self, line: str) -> None:
        with self._lock:
            self.notes.append(f"{time.strftime('%H:%M:%S')} {line}")

    def describe(self) -> str:
        with self._lock:
            orders = [json.dumps(o.payload) for o in self.orders]
            ri = [f"{time.strftime('%H:%M:%S', time.localtime(r.at))}.{int(r.at * 1000) % 1000:03d} {r.what}"
                  for r in self.renewal_requests]
            notes = self.notes[-60:]
        return (
            f"stand-in newOrder payloads: {orders}\nstand-in renewal-info requests: {ri}\n"
            f"stand-in requests (last 60):\n" + "\n".join(notes)
        )

    # ---- lifecycle

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def directory(self) -> str:
        return f"{self.origin}/dir"

    def start(self) -> "AriStandIn":
        self._server = _Server(("127.0.0.1", 0), _Handler, self._tls, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ari-standin", daemon=True)
        self._thread.start()
        self._directory()  # learns pebble's newOrder path
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- what the handler does

    def _pebble_request(self, method: str, path: str, headers: dict[str, str], body: bytes):
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.pebble.port, context=self.pebble.client_context(), timeout=30
        )
        try:
            # An explicit Host: pebble builds the URL it compares with the
            # JWS "url", and every URL it hands out, from it.
            conn.request(method, path, body=body or None, headers={**headers, "Host": f"127.0.0.1:{self.port}"})
            rsp = conn.getresponse()
            return rsp.status, rsp.getheaders(), rsp.read()
        finally:
            conn.close()

    def _directory(self) -> bytes:
        _, _, body = self._pebble_request("GET", "/dir", {}, b"")
        directory = json.loads(body)
        pebble_origin = f"https://127.0.0.1:{self.pebble.port}"
        for k, v in list(directory.items()):
            if isinstance(v, str):
                directory[k] = v.replace(pebble_origin, self.origin)
        with self._lock:
            if self.ari:
                directory["renewalInfo"] = f"{self.origin}/renewal-info"
            else:
                directory.pop("renewalInfo", None)
            meta = dict(directory.get("meta") or {})
            if self.profiles is not None:
                meta["profiles"] = dict(self.profiles)
            else:
                meta.pop("profiles", None)
            directory["meta"] = meta
            self._new_order_path = urllib.parse.urlsplit(directory["newOrder"]).path
        self._note(f"directory: {json.dumps(directory)}")
        return json.dumps(directory).encode()

    def _renewal_info(self, cid: str):
        with self._lock:
            self.renewal_requests.append(Recorded(at=time.time(), what=cid))
            if not self.ari:
                return 404, [("Content-Type", "application/problem+json")], b'{"type":"urn:ietf:params:acme:error:malformed","detail":"no ARI"}'
            start, end = self.windows.get(cid, self.window)
            answer = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
            if self.explanation_url:
                answer["explanationURL"] = self.explanation_url
            headers = [("Content-Type", "application/json")]
            if self.retry_after is not None:
                headers.append(("Retry-After", str(self.retry_after)))
        return 200, headers, json.dumps(answer).encode()

    def _forward(self, method: str, path: str, in_headers, body: bytes):
        headers = {}
        for k in ("Content-Type", "Accept", "User-Agent", "Accept-Language"):
            if in_headers.get(k):
                headers[k] = in_headers[k]
        extras = None
        if method == "POST" and path == self._new_order_path:
            try:
                payload = json.loads(b64url_decode(json.loads(body)["payload"]))
            except (ValueError, KeyError, TypeError) as exc:
                payload = {"<undecodable>": repr(exc)}
            with self._lock:
                self.orders.append(Recorded(at=time.time(), what="newOrder", payload=payload))
            extras = {k: payload[k] for k in ("replaces", "profile") if k in payload}
        status, rsp_headers, out = self._pebble_request(method, path, headers, body)
        out = self._reflect(out, extras)
        keep = [(k, v) for k, v in rsp_headers if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server")]
        self._note(f"-> pebble {method} {path}: {status}")
        return status, keep, out

    def _reflect(self, out: bytes, extras: dict | None) -> bytes:
        """Adds `replaces`/`profile` to the order objects pebble returns (see
        the module docstring)."""
        try:
            obj = json.loads(out)
        except ValueError:
            return out
        if not isinstance(obj, dict) or "finalize" not in obj:
            return out
        with self._lock:
            if extras is not None:
                self._order_extras[obj["finalize"]] = extras
            known = self._order_extras.get(obj["finalize"])
        if not known:
            return out
        obj.update({k: v for k, v in known.items() if k not in obj})
        return json.dumps(obj).encode()

