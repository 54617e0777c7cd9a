"""Client certificates (mTLS), against the real binary (issue 20, contract
section "Client certificates (mTLS)").

    Python ssl / http.client / h2 / aioquic / openssl s_client
        --TLS, SNI secure.test | open.test, to 127.0.0.1:<port>--> tlsfront
        --http://127.0.0.1:<app>--> tests/apps/mtls_echo_app.py

Every certificate is made here: a server CA (trusted by the clients) signing
secure.test and open.test; a client CA signing the client certificates (alice
with a URI and a DNS SAN, carol with no SAN, eve revoked by a CRL, and bob made
with the openssl CLI with two DNS SANs); an unrelated CA signing mallory; an
impostor CA with the client CA's very name but another key signing trudy.

The echo app answers with the headers it received and remembers every path,
so "nothing reached the app" is checked by asking it, with a unique path per
request. Every wait has a deadline; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import stop_process, tlsfront_bin
from h3_support import Front, free_dual_port, metric_value, start_front
from h3client import H3Client, H3Timeout
from routes_support import APPS_DIR, AppProcess, Apps, http_get

ECHO_APP = APPS_DIR / "mtls_echo_app.py"
IO_TIMEOUT = 10.0
# How long a refused connection may take to show the refusal (an alert).
REFUSAL_WAIT = 5.0
SPIFFE = "spiffe://example.org/ns/test/sa/web"
FORGED = 'Hash=0000forged;Subject="CN=admin,O=Forged-By-Client"'
XFCC = "x-forwarded-client-cert"


# --------------------------------------------------------------------------- certificates


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(cn: str, o: str | None = "Example") -> x509.Name:
    attrs = []
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _write_key(key, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    pem: Path
    key_pem: Path


@dataclass
class Leaf:
    cert: x509.Certificate
    pem: Path
    key_pem: Path


def make_ca(d: Path, file: str, subject: x509.Name) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem, key_pem = d / f"{file}.pem", d / f"{file}-key.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_pem)
    return Ca(cert=cert, key=key, pem=pem, key_pem=key_pem)


def make_leaf(
    d: Path, file: str, ca: Ca, subject: x509.Name, dns: list[str] = (), uris: list[str] = (), server: bool = False
) -> Leaf:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    sans = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(n) for n in dns]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    pem, key_pem = d / f"{file}.pem", d / f"{file}-key.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_pem)
    return Leaf(cert=cert, pem=pem, key_pem=key_pem)


def make_leaf_with_openssl(d: Path, file: str, ca: Ca, subj: str, san: str) -> Leaf:
    """A client certificate made by the openssl CLI (EC P-256, signed by `ca`)."""
    key_pem, csr, pem, ext = d / f"{file}-key.pem", d / f"{file}.csr", d / f"{file}.pem", d / f"{file}.ext"
    ext.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = clientAuth\n"
        f"subjectAltName = {san}\n"
    )
    cmds = [
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key_pem), "-out", str(csr), "-subj", subj],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.pem), "-CAkey", str(ca.key_pem),
         "-set_serial", str(x509.random_serial_number()), "-days", "30", "-sha256",
         "-extfile", str(ext), "-out", str(pem)],
    ]
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stdout}\n{res.stderr}"
    return Leaf(cert=x509.load_pem_x509_certificate(pem.read_bytes()), pem=pem, key_pem=key_pem)


def make_crl(d: Path, file: str, ca: Ca, revoked: list[x509.Certificate]) -> Path:
    now = _now()
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    for cert in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - dt.timedelta(hours=1))
            .build()
        )
    crl = b.sign(ca.key, hashes.SHA256())
    path = d / f"{file}.pem"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Pki:
    dir: Path
    server_ca: Ca
    secure: Leaf  # server certificate for secure.test
    open: Leaf  # server certificate for open.test
    client_ca: Ca
    alice: Leaf  # URI + DNS SAN
    carol: Leaf  # no SAN
    eve: Leaf  # revoked in crl
    bob: Leaf  # made with the openssl CLI, two DNS SANs
    mallory: Leaf  # signed by an unrelated CA
    trudy: Leaf  # signed by a CA with the client CA's name but another key
    crl: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("mtls-pki")
    server_ca = make_ca(d, "server-ca", _name("mTLS test server CA"))
    secure = make_leaf(d, "secure", server_ca, _name("secure.test", None), dns=["secure.test"], server=True)
    open_ = make_leaf(d, "open", server_ca, _name("open.test", None), dns=["open.test"], server=True)
    client_ca = make_ca(d, "client-ca", _name("mTLS test client CA"))
    alice = make_leaf(d, "alice", client_ca, _name("alice"), dns=["alice.example.org"], uris=[SPIFFE])
    carol = make_leaf(d, "carol", client_ca, _name("carol", None))
    eve = make_leaf(d, "eve", client_ca, _name("eve"), dns=["eve.example.org"])
    bob = make_leaf_with_openssl(
        d, "bob", client_ca, "/O=Example/CN=bob", "DNS:bob.example.org, DNS:bob2.example.org"
    )
    unrelated = make_ca(d, "unrelated-ca", _name("Unrelated CA", "Elsewhere"))
    mallory = make_leaf(d, "mallory", unrelated, _name("mallory"), dns=["mallory.example.org"])
    impostor = make_ca(d, "impostor-ca", _name("mTLS test client CA"))  # same name, other key
    trudy = make_leaf(d, "trudy", impostor, _name("alice"), dns=["alice.example.org"], uris=[SPIFFE])
    crl = make_crl(d, "client-crl", client_ca, [eve.cert])
    return Pki(d, server_ca, secure, open_, client_ca, alice, carol, eve, bob, mallory, trudy, crl)


def expected_xfcc(leaf: Leaf) -> str:
    """The header the contract describes, computed here from the certificate."""
    cert = leaf.cert
    parts = [
        "Hash=" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        f'Subject="{cert.subject.rfc4514_string()}"',
    ]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        parts += [f"URI={u}" for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        parts += [f"DNS={n}" for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    return ";".join(parts)


def norm_xfcc(value: str) -> str:
    """The hash's hex digits compared case-insensitively; everything else exactly."""
    return re.sub(r"^Hash=([0-9A-Fa-f]+)", lambda m: "Hash=" + m.group(1).lower(), value)


def test_expected_headers_are_what_the_contract_spells(pki: Pki):
    # The test's own computation, checked against the contract's literal form
    # (so a wrong helper cannot agree with a wrong tlsfront).
    der = pki.alice.cert.public_bytes(serialization.Encoding.DER)
    h = hashlib.sha256(der).hexdigest()
    assert expected_xfcc(pki.alice) == (
        f'Hash={h};Subject="CN=alice,O=Example";URI={SPIFFE};DNS=alice.example.org'
    )
    bob_der = pki.bob.cert.public_bytes(serialization.Encoding.DER)
    assert expected_xfcc(pki.bob) == (
        f'Hash={hashlib.sha256(bob_der).hexdigest()};Subject="CN=bob,O=Example";'
        "DNS=bob.example.org;DNS=bob2.example.org"
    )
    assert expected_xfcc(pki.carol).endswith(';Subject="CN=carol"')


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def echo_app(tmp_path_factory) -> AppProcess:
    apps = Apps(tmp=tmp_path_factory.mktemp("mtls-app"))
    try:
        yield apps.werkzeug("mtls-echo", ECHO_APP, {})
    finally:
        apps.stop_all()


def app_seen(app: AppProcess) -> list[str]:
    status, body = http_get(app.target, "/_seen", timeout=5)
    assert status == 200, body
    return json.loads(body)


def probe() -> str:
    return f"/probe/{uuid.uuid4().hex}"


def _toml_keys(keys: dict[str, str]) -> str:
    return "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in keys.items())


def front_toml(port: int, app: AppProcess, top: dict[str, str], sites: list[tuple[Leaf, str, dict[str, str]]]) -> str:
    text = (
        "[listen]\n"
        f'https = "127.0.0.1:{port}"\n'
        "[tls]\n"
        "self_signed_hosts = []\n" + _toml_keys(top) + "[log]\n"
        'access = "common"\n'
        "[admin]\n"
        'listen = "127.0.0.1:0"\n'
        "[upstream]\n"
        f'url = "http://{app.target}"\n'
    )
    for leaf, name, keys in sites:
        text += (
            "\n[[tls.certificate]]\n"
            f"cert = {json.dumps(str(leaf.pem))}\n"
            f"key = {json.dumps(str(leaf.key_pem))}\n"
            f"names = [{json.dumps(name)}]\n" + _toml_keys(keys)
        )
    return text


def launch(tmp_path_factory, pki: Pki, app: AppProcess, name: str, top: dict, sites: list) -> Front:
    port = free_dual_port()
    workdir = tmp_path_factory.mktemp(name)
    return start_front(workdir, pki.dir, front_toml(port, app, top, sites), port, name=name)


@pytest.fixture(scope="module")
def required_front(tmp_path_factory, pki, echo_app):
    f = launch(
        tmp_path_factory, pki, echo_app, "tlsfront-required",
        {"client_auth": "required", "client_ca": pki.client_ca.pem},
        [(pki.secure, "secure.test", {})],
    )
    yield f
    stop_process(f.proc)


@pytest.fixture(scope="module")
def optional_front(tmp_path_factory, pki, echo_app):
    f = launch(
        tmp_path_factory, pki, echo_app, "tlsfront-optional",
        {"client_auth": "optional", "client_ca": pki.client_ca.pem},
        [(pki.secure, "secure.test", {})],
    )
    yield f
    stop_process(f.proc)


@pytest.fixture(scope="module")
def none_front(tmp_path_factory, pki, echo_app):
    # No client-certificate key anywhere: the default.
    f = launch(tmp_path_factory, pki, echo_app, "tlsfront-none", {}, [(pki.open, "open.test", {})])
    yield f
    stop_process(f.proc)


@pytest.fixture(scope="module")
def site_front(tmp_path_factory, pki, echo_app):
    # open.test first: it is also the site of a connection without SNI.
    f = launch(
        tmp_path_factory, pki, echo_app, "tlsfront-sites", {},
        [
            (pki.open, "open.test", {}),
            (pki.secure, "secure.test", {"client_auth": "required", "client_ca": pki.client_ca.pem}),
        ],
    )
    yield f
    stop_process(f.proc)


@pytest.fixture(scope="module")
def inherit_front(tmp_path_factory, pki, echo_app):
    # [tls] requires certificates; secure.test inherits that, open.test opts out.
    f = launch(
        tmp_path_factory, pki, echo_app, "tlsfront-inherit",
        {"client_auth": "required", "client_ca": pki.client_ca.pem},
        [
            (pki.secure, "secure.test", {}),
            (pki.open, "open.test", {"client_auth": "none"}),
        ],
    )
    yield f
    stop_process(f.proc)


@pytest.fixture(scope="module")
def crl_front(tmp_path_factory, pki, echo_app):
    f = launch(
        tmp_path_factory, pki, echo_app, "tlsfront-crl",
        {"client_auth": "required", "client_ca": pki.client_ca.pem, "client_crl": pki.crl},
        [(pki.secure, "secure.test", {})],
    )
    yield f
    stop_process(f.proc)


# --------------------------------------------------------------------------- clients


def client_ctx(pki: Pki, leaf: Leaf | None = None, max_version: ssl.TLSVersion | None = None,
               alpn: tuple[str, ...] = ("http/1.1",), sni: str | None = "x") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.server_ca.pem))
    if sni is None:
        ctx.check_hostname = False  # no name to check; the chain is still verified
    if leaf is not None:
        ctx.load_cert_chain(certfile=str(leaf.pem), keyfile=str(leaf.key_pem))
    if max_version is not None:
        ctx.maximum_version = max_version
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(port: int, ctx: ssl.SSLContext, sni: str | None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> dict:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"not JSON: {self!r}")

    def app_header(self, name: str) -> list[str]:
        """The values of `name` among the headers the echo app received."""
        return [v for k, v in self.json()["headers"] if k.lower() == name.lower()]

    def __repr__(self) -> str:
        return f"Resp({self.status}, {self.headers}, {self.body[:600]!r})"


class H1:
    """HTTP/1.1 requests on one TLS connection (keep-alive), Host set per request."""

    def __init__(self, sock: ssl.SSLSocket):
        self.conn = http.client.HTTPConnection("unused", timeout=IO_TIMEOUT)
        self.conn.sock = sock

    def get(self, host: str, path: str, headers: dict[str, str] | None = None) -> Resp:
        self.conn.request("GET", path, headers={"Host": host, **(headers or {})})
        r = self.conn.getresponse()
        return Resp(r.status, r.getheaders(), r.read())

    def close(self) -> None:
        self.conn.close()


def https_get(port: int, pki: Pki, sni: str | None, host: str, path: str, leaf: Leaf | None = None,
              headers: dict[str, str] | None = None, max_version: ssl.TLSVersion | None = None) -> Resp:
    sock = tls_connect(port, client_ctx(pki, leaf, max_version, sni=sni), sni)
    c = H1(sock)
    try:
        return c.get(host, path, headers)
    finally:
        c.close()


def refusal(port: int, pki: Pki, sni: str, leaf: Leaf | None, max_version: ssl.TLSVersion | None = None) -> str:
    """Connects and expects the server to refuse: returns where and how
    ("handshake: ..." or "after handshake: ..."). Fails the test when the
    connection is accepted: then a request is sent on it, to report what
    tlsfront answered."""
    ctx = client_ctx(pki, leaf, max_version, sni=sni)
    try:
        sock = tls_connect(port, ctx, sni)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"handshake: {exc!r}"
    with sock:
        # TLS 1.3: the client's handshake ends before the server has seen its
        # certificate; the server's verdict (an alert) is the first thing to read.
        sock.settimeout(REFUSAL_WAIT)
        try:
            data = sock.recv(1)
        except (TimeoutError, socket.timeout):
            data = None
        except (ssl.SSLError, ConnectionError) as exc:
            return f"after handshake: {exc!r}"
        if data == b"":
            return "after handshake: closed without an alert"
        sock.settimeout(IO_TIMEOUT)
        path = probe()
        try:
            r = H1(sock).get(sni, path)
        except (ssl.SSLError, ConnectionError, http.client.HTTPException) as exc:
            return f"after a request: {exc!r}"
        raise AssertionError(
            f"connection with SNI {sni} and client certificate "
            f"{leaf.pem.name if leaf else None} was not refused: no alert within {REFUSAL_WAIT}s, "
            f"and GET {path} on it got HTTP {r.status}: {r!r}"
        )


def s_client(port: int, pki: Pki, sni: str, leaf: Leaf | None, version: str = "-tls1_3",
             request: bytes | None = None) -> subprocess.CompletedProcess:
    # -msg: one line per handshake message ("<<< TLS 1.3, Handshake [...], CertificateRequest").
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni, "-msg",
           "-CAfile", str(pki.server_ca.pem), "-verify_return_error", version, "-alpn", "http/1.1"]
    if leaf is not None:
        cmd += ["-cert", str(leaf.pem), "-key", str(leaf.key_pem)]
    if request is not None:
        cmd.append("-ign_eof")  # read until the server closes (the request says Connection: close)
    return subprocess.run(cmd, input=request or b"", capture_output=True, timeout=30)


def http_request(host: str, path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()


# (s_client prints "No client certificate CA names sent" whether or not a
# CertificateRequest came, so the handshake messages themselves are looked at.)
CERT_REQUEST_RE = re.compile(r"^<<< TLS 1\.[23], Handshake \[length [0-9a-f]+\], CertificateRequest$", re.M)
CLIENT_CERT_SENT_RE = re.compile(r"^>>> TLS 1\.[23], Handshake \[length [0-9a-f]+\], Certificate$", re.M)


def cert_requested(out: str) -> bool:
    return bool(CERT_REQUEST_RE.search(out))


def json_in(out: str) -> dict:
    """The first JSON object in s_client's output (the echo app's answer)."""
    obj, _ = json.JSONDecoder().raw_decode(out[out.index('{"'):])
    return obj


def h2_exchange(sock: ssl.SSLSocket, requests: list[tuple[str, str, list[tuple[str, str]]]]) -> list[Resp]:
    """Sequential HTTP/2 requests (authority, path, headers) on one connection."""
    import h2.config
    import h2.connection
    import h2.events

    assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    out = []
    for authority, path, headers in requests:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path), *headers],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        status, hdrs, body, ended = None, [], b"", False
        deadline = time.monotonic() + IO_TIMEOUT
        while not ended:
            assert time.monotonic() < deadline, f"HTTP/2 response to {authority}{path} did not end in time"
            data = sock.recv(65536)
            assert data, f"connection closed before the HTTP/2 response to {authority}{path} ended"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    for k, v in ev.headers:
                        if k == ":status":
                            status = int(v)
                        else:
                            hdrs.append((k, v))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise AssertionError(f"HTTP/2 stream to {authority}{path} reset: {ev}")
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)
        out.append(Resp(status, hdrs, body))
    return out


def h3_connect(port: int, pki: Pki, sni: str) -> H3Client:
    """An HTTP/3 connection, retried for a few seconds while the QUIC endpoint comes up."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return H3Client.connect(port, timeout=3, server_name=sni, cafile=pki.server_ca.pem)
        except (H3Timeout, ConnectionError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no HTTP/3 connection for SNI {sni}: {exc!r}")
            time.sleep(0.2)


def assert_xfcc(r: Resp, leaf: Leaf) -> None:
    assert r.status == 200, r
    got = r.app_header(XFCC)
    assert len(got) == 1, f"the app must get exactly one X-Forwarded-Client-Cert, got {got}"
    assert norm_xfcc(got[0]) == expected_xfcc(leaf), f"\n got: {got[0]}\nwant: {expected_xfcc(leaf)}"


# --------------------------------------------------------------------------- required


def test_required_refuses_a_connection_without_certificate(pki, required_front, echo_app):
    port = required_front.port
    # TLS 1.3: the alert comes after the client's Finished; it must be certificate_required.
    how = refusal(port, pki, "secure.test", None)
    assert "CERTIFICATE_REQUIRED" in how.upper().replace(" ", "_"), how
    # TLS 1.2: the server's verdict comes before the handshake ends.
    how12 = refusal(port, pki, "secure.test", None, ssl.TLSVersion.TLSv1_2)
    assert how12.startswith("handshake:") and "SSLError" in how12, how12
    # openssl s_client without a certificate gets no HTTP response either.
    path = probe()
    res = s_client(port, pki, "secure.test", None, request=http_request("secure.test", path))
    out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
    assert "HTTP/1.1" not in out, out
    assert "certificate required" in out.lower(), out
    assert path not in app_seen(echo_app)


@pytest.mark.parametrize("who", ["mallory", "trudy"])
def test_required_refuses_a_certificate_of_another_ca(pki, required_front, who):
    # mallory: an unrelated CA; trudy: a CA with the trusted CA's name, another key.
    leaf = getattr(pki, who)
    for version in (None, ssl.TLSVersion.TLSv1_2):
        how = refusal(required_front.port, pki, "secure.test", leaf, version)
        assert "SSLError" in how and "alert" in how.lower(), f"{version}: {how}"


@pytest.mark.parametrize("version", [None, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_required_good_certificate_reaches_the_app_with_the_header(pki, required_front, version):
    r = https_get(required_front.port, pki, "secure.test", "secure.test", probe(), pki.alice,
                  headers={"X-Forwarded-Client-Cert": FORGED}, max_version=version)
    assert_xfcc(r, pki.alice)
    got = r.app_header(XFCC)[0]
    # Spelled out, as in the contract (the exact form is also compared above).
    assert f"URI={SPIFFE}" in got and got.endswith(";DNS=alice.example.org"), got
    assert 'Subject="CN=alice,O=Example"' in got, got
    # No SAN: no URI/DNS parts.
    assert_xfcc(https_get(required_front.port, pki, "secure.test", "secure.test", probe(), pki.carol), pki.carol)


def test_required_over_http2_and_keep_alive_each_request_gets_the_header(pki, required_front):
    sock = tls_connect(required_front.port, client_ctx(pki, pki.alice, alpn=("h2",)), "secure.test")
    with sock:
        rs = h2_exchange(sock, [
            ("secure.test", probe(), []),
            ("secure.test", probe(), [("x-forwarded-client-cert", FORGED)]),
        ])
    for r in rs:
        assert_xfcc(r, pki.alice)
    c = H1(tls_connect(required_front.port, client_ctx(pki, pki.carol), "secure.test"))
    try:
        for _ in range(3):
            assert_xfcc(c.get("secure.test", probe(), {"X-Forwarded-Client-Cert": FORGED}), pki.carol)
    finally:
        c.close()


def test_required_certificate_made_with_openssl_cli_via_s_client(pki, required_front, echo_app):
    path = probe()
    res = s_client(required_front.port, pki, "secure.test", pki.bob,
                   request=http_request("secure.test", path, f"X-Forwarded-Client-Cert: {FORGED}\r\n"))
    out = res.stdout.decode(errors="replace")
    assert cert_requested(out), f"no CertificateRequest seen by s_client:\n{out}"
    assert "Acceptable client certificate CA names" in out, out
    assert CLIENT_CERT_SENT_RE.search(out), f"s_client sent no certificate:\n{out}"
    assert "HTTP/1.1 200" in out, out + res.stderr.decode(errors="replace")
    body = json_in(out)
    got = [v for k, v in body["headers"] if k.lower() == XFCC]
    assert len(got) == 1 and norm_xfcc(got[0]) == expected_xfcc(pki.bob), f"{got} != {expected_xfcc(pki.bob)}"
    assert path in app_seen(echo_app)


# --------------------------------------------------------------------------- optional


def test_optional_without_certificate_passes_without_the_header(pki, optional_front, echo_app):
    path = probe()
    r = https_get(optional_front.port, pki, "secure.test", "secure.test", path,
                  headers={"X-Forwarded-Client-Cert": FORGED, "x-forwarded-client-CERT": "Hash=abc"})
    assert r.status == 200, r
    assert r.app_header(XFCC) == [], f"forged header reached the app: {r.json()['headers']}"
    assert path in app_seen(echo_app)
    # HTTP/2 too.
    sock = tls_connect(optional_front.port, client_ctx(pki, None, alpn=("h2",)), "secure.test")
    with sock:
        (r2,) = h2_exchange(sock, [("secure.test", probe(), [("x-forwarded-client-cert", FORGED)])])
    assert r2.status == 200 and r2.app_header(XFCC) == [], r2


def test_optional_with_certificate_gets_the_header(pki, optional_front):
    for leaf in (pki.alice, pki.bob, pki.carol):
        r = https_get(optional_front.port, pki, "secure.test", "secure.test", probe(), leaf,
                      headers={"X-Forwarded-Client-Cert": FORGED})
        assert_xfcc(r, leaf)


def test_optional_still_refuses_an_untrusted_certificate(pki, optional_front):
    how = refusal(optional_front.port, pki, "secure.test", pki.mallory)
    assert "SSLError" in how and "alert" in how.lower(), how


# --------------------------------------------------------------------------- none (default)


def test_none_removes_a_client_sent_header(pki, none_front, echo_app):
    path = probe()
    # A certificate loaded in the client is not asked for, so none is sent.
    r = https_get(none_front.port, pki, "open.test", "open.test", path, pki.alice,
                  headers={"X-Forwarded-Client-Cert": FORGED})
    assert r.status == 200, r
    assert r.app_header(XFCC) == [], f"forged header reached the app: {r.json()['headers']}"
    assert path in app_seen(echo_app)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_none_sends_no_certificate_request(pki, none_front, required_front, version):
    path = probe()
    res = s_client(none_front.port, pki, "open.test", pki.bob, version,
                   request=http_request("open.test", path, f"X-Forwarded-Client-Cert: {FORGED}\r\n"))
    out = res.stdout.decode(errors="replace")
    assert "HTTP/1.1 200" in out, out + res.stderr.decode(errors="replace")
    assert not cert_requested(out), f"CertificateRequest sent with client_auth none:\n{out}"
    assert "Acceptable client certificate CA names" not in out, out
    assert not CLIENT_CERT_SENT_RE.search(out), f"the client's certificate went out:\n{out}"
    assert [v for k, v in json_in(out)["headers"] if k.lower() == XFCC] == [], out
    assert "Forged-By-Client" not in out, f"forged header reached the app:\n{out}"
    # Control: the same s_client does see a CertificateRequest from a 'required' server.
    res = s_client(required_front.port, pki, "secure.test", pki.bob, version,
                   request=http_request("secure.test", probe()))
    out = res.stdout.decode(errors="replace")
    assert cert_requested(out), out
    assert CLIENT_CERT_SENT_RE.search(out), out
    assert "HTTP/1.1 200" in out, out


# --------------------------------------------------------------------------- per site


def test_per_site_open_works_without_certificate_secure_does_not(pki, site_front, echo_app):
    path = probe()
    r = https_get(site_front.port, pki, "open.test", "open.test", path, headers={"X-Forwarded-Client-Cert": FORGED})
    assert r.status == 200 and r.app_header(XFCC) == [], r
    assert path in app_seen(echo_app)
    how = refusal(site_front.port, pki, "secure.test", None)
    assert "CERTIFICATE_REQUIRED" in how.upper().replace(" ", "_"), how
    assert "SSLError" in refusal(site_front.port, pki, "secure.test", pki.mallory)
    assert_xfcc(https_get(site_front.port, pki, "secure.test", "secure.test", probe(), pki.alice), pki.alice)
    # open.test sends no CertificateRequest, secure.test does (same process).
    out = s_client(site_front.port, pki, "open.test", pki.bob).stdout.decode(errors="replace")
    assert "Verification: OK" in out and not cert_requested(out), out
    out = s_client(site_front.port, pki, "secure.test", pki.bob).stdout.decode(errors="replace")
    assert cert_requested(out), out


@pytest.mark.parametrize(
    "host", ["secure.test", "SECURE.Test", "secure.test:{port}", "secure.test."],
)
def test_per_site_host_of_required_site_on_open_connection_gets_421(pki, site_front, echo_app, host):
    host = host.format(port=site_front.port)
    path = probe()
    r = https_get(site_front.port, pki, "open.test", host, path)
    assert r.status == 421, f"Host {host!r} on a connection for open.test: {r!r}"
    assert path not in app_seen(echo_app), f"Host {host!r}: the request reached the app"


def test_per_site_no_bypass_by_reusing_a_connection(pki, site_front, echo_app):
    # HTTP/1.1 keep-alive: first open.test (fine), then secure.test on the same connection.
    c = H1(tls_connect(site_front.port, client_ctx(pki), "open.test"))
    p1, p2 = probe(), probe()
    try:
        r1 = c.get("open.test", p1)
        assert r1.status == 200, r1
        try:
            r2 = c.get("secure.test", p2)
            assert r2.status == 421, r2
        except (http.client.HTTPException, ConnectionError) as exc:
            pytest.fail(f"no 421 for Host secure.test on a reused open.test connection: {exc!r}")
    finally:
        c.close()
    # HTTP/2: one connection made for open.test, a stream for secure.test.
    p3, p4 = probe(), probe()
    sock = tls_connect(site_front.port, client_ctx(pki, alpn=("h2",)), "open.test")
    with sock:
        r3, r4 = h2_exchange(sock, [("open.test", p3, []), ("secure.test", p4, [])])
    assert r3.status == 200, r3
    assert r4.status == 421, r4
    # No SNI at all (the default site is open.test), Host secure.test.
    p5 = probe()
    r5 = https_get(site_front.port, pki, None, "secure.test", p5)
    assert r5.status == 421, r5
    seen = app_seen(echo_app)
    assert p1 in seen and p3 in seen
    for p in (p2, p4, p5):
        assert p not in seen, f"{p} reached the app"


def test_per_site_inherits_tls_keys_unless_the_site_sets_its_own(pki, inherit_front, echo_app):
    port = inherit_front.port
    r = https_get(port, pki, "open.test", "open.test", probe())
    assert r.status == 200 and r.app_header(XFCC) == [], r
    how = refusal(port, pki, "secure.test", None)
    assert "CERTIFICATE_REQUIRED" in how.upper().replace(" ", "_"), how
    assert_xfcc(https_get(port, pki, "secure.test", "secure.test", probe(), pki.alice), pki.alice)
    path = probe()
    assert https_get(port, pki, "open.test", "secure.test", path).status == 421
    assert path not in app_seen(echo_app)


def test_metric_counts_the_421s(pki, site_front):
    name, label = "tlsfront_refused_requests_total", {"reason": "client_cert"}
    before = metric_value(site_front.metrics(), name, **label)
    # Requests that are not refused do not count.
    assert https_get(site_front.port, pki, "open.test", "open.test", probe()).status == 200
    assert https_get(site_front.port, pki, "secure.test", "secure.test", probe(), pki.alice).status == 200
    assert metric_value(site_front.metrics(), name, **label) == before
    assert https_get(site_front.port, pki, "open.test", "secure.test", probe()).status == 421
    text = site_front.metrics()
    assert 'tlsfront_refused_requests_total{reason="client_cert"}' in text, text
    assert metric_value(text, name, **label) == before + 1, text
    assert https_get(site_front.port, pki, "open.test", "secure.test", probe()).status == 421
    assert metric_value(site_front.metrics(), name, **label) == before + 2


def test_per_site_http3_required_site_gets_no_alt_svc_and_421(pki, site_front, echo_app):
    # Control: HTTP/3 is on (default), advertised for open.test.
    r = https_get(site_front.port, pki, "open.test", "open.test", probe())
    assert r.status == 200 and r.header("alt-svc"), f"open.test should advertise HTTP/3: {r!r}"
    r = https_get(site_front.port, pki, "secure.test", "secure.test", probe(), pki.alice)
    assert r.status == 200, r
    assert r.header("alt-svc") == [], f"secure.test requires client certificates, yet Alt-Svc: {r.header('alt-svc')}"
    p1, p2, p3 = probe(), probe(), probe()
    with h3_connect(site_front.port, pki, "open.test") as c:
        ok = c.get(p1, authority="open.test")
        assert ok.status == 200, ok
        bad = c.get(p2, authority="secure.test")
        assert bad.status == 421, bad
    try:
        c = H3Client.connect(site_front.port, timeout=5, server_name="secure.test", cafile=pki.server_ca.pem)
    except (H3Timeout, ConnectionError) as exc:
        pytest.fail(f"HTTP/3 for secure.test: the contract says its requests get 421, the QUIC handshake failed: {exc!r}")
    with c:
        r3 = c.get(p3, authority="secure.test")
    assert r3.status == 421, r3
    seen = app_seen(echo_app)
    assert p1 in seen
    assert p2 not in seen and p3 not in seen


# --------------------------------------------------------------------------- CRL


def test_crl_refuses_the_revoked_certificate_only(pki, crl_front, echo_app):
    for version in (None, ssl.TLSVersion.TLSv1_2):
        how = refusal(crl_front.port, pki, "secure.test", pki.eve, version)
        assert "SSLError" in how and "alert" in how.lower(), f"{version}: {how}"
        assert_xfcc(https_get(crl_front.port, pki, "secure.test", "secure.test", probe(), pki.alice,
                              max_version=version), pki.alice)


def test_crl_control_eve_is_accepted_without_the_crl(pki, required_front):
    # The same CA without the CRL accepts eve: the CRL is what refuses her above.
    assert_xfcc(https_get(required_front.port, pki, "secure.test", "secure.test", probe(), pki.eve), pki.eve)


# --------------------------------------------------------------------------- tlsfront check


def run_check(tmp_path: Path, pki: Pki, text: str, cmd: str = "check") -> subprocess.CompletedProcess:
    config = tmp_path / "check.toml"
    config.write_text(text)
    env = dict(os.environ, NO_COLOR="1")
    env.pop("TLSFRONT_CONFIG", None)
    return subprocess.run(
        [str(tlsfront_bin()), cmd, "-c", str(config)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )


def check_config(pki: Pki, top: dict[str, str], site: dict[str, str] | None = None) -> str:
    return (
        "[listen]\nhttps = \"127.0.0.1:0\"\n[tls]\nself_signed_hosts = []\n" + _toml_keys(top)
        + "[upstream]\nurl = \"http://127.0.0.1:9\"\n"
        + "\n[[tls.certificate]]\n"
        + f"cert = {json.dumps(str(pki.secure.pem))}\nkey = {json.dumps(str(pki.secure.key_pem))}\n"
        + 'names = ["secure.test"]\n' + _toml_keys(site or {})
    )


def assert_check_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    err = res.stderr
    assert err.strip(), "no message"
    assert len(err.strip().splitlines()) == 1, f"one clear line: {err}"
    assert "panicked" not in err, err
    for n in needles:
        assert n in err, f"{n!r} missing in: {err}"


def test_check_accepts_a_valid_mtls_config_and_prints_it(tmp_path, pki):
    res = run_check(tmp_path, pki, check_config(
        pki, {"client_auth": "required", "client_ca": pki.client_ca.pem, "client_crl": pki.crl},
        {"client_auth": "optional"},
    ))
    assert res.returncode == 0, res.stderr
    assert 'client_auth = "required"' in res.stdout, res.stdout
    assert 'client_auth = "optional"' in res.stdout, res.stdout
    assert str(pki.client_ca.pem) in res.stdout, res.stdout


def test_check_required_without_client_ca(tmp_path, pki):
    res = run_check(tmp_path, pki, check_config(pki, {"client_auth": "required"}))
    assert_check_error(res, "check.toml", "client_ca")
    assert "tls.client_auth" in res.stderr or "tls.client_ca" in res.stderr, res.stderr
    # Per site, with no client_ca to inherit either.
    res = run_check(tmp_path, pki, check_config(pki, {}, {"client_auth": "required"}))
    assert_check_error(res, "check.toml", "tls.certificate[0]", "client_ca")
    # `run` refuses it the same way, at once.
    res = run_check(tmp_path, pki, check_config(pki, {"client_auth": "required"}), cmd="run")
    assert res.returncode == 2, f"run: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    # Control: inheriting [tls]'s client_ca is fine.
    res = run_check(tmp_path, pki, check_config(pki, {"client_ca": pki.client_ca.pem}, {"client_auth": "required"}))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("content", ["junk", "key", "empty"])
def test_check_client_ca_that_is_not_pem_certificates(tmp_path, pki, content):
    bad = tmp_path / f"not-a-ca-{content}.pem"
    if content == "junk":
        bad.write_text("this is not a certificate\n")
    elif content == "key":
        bad.write_bytes(pki.client_ca.key_pem.read_bytes())  # PEM, but a private key
    else:
        bad.write_text("")
    res = run_check(tmp_path, pki, check_config(pki, {"client_auth": "required", "client_ca": bad}))
    assert_check_error(res, "check.toml", "tls.client_ca", bad.name)


def test_check_misspelt_client_auth_gets_did_you_mean(tmp_path, pki):
    res = run_check(tmp_path, pki, check_config(pki, {"client_auth": "requierd", "client_ca": pki.client_ca.pem}))
    assert_check_error(res, "check.toml", "tls.client_auth", "did you mean", "required")
