"""Part 5: TLS posture of the listener.

1. `sslscan` (Debian's sslscan package) against tlsfront, XML output parsed:
   no SSLv2/SSLv3/TLSv1.0/TLSv1.1; no weak cipher (NULL, EXPORT, RC4, DES/3DES,
   MD5, anonymous, CBC, SHA-1 MAC); forward secrecy only (ECDHE key exchange
   for TLS 1.2, TLS 1.3 suites); the accepted protocols, ciphers and groups
   are summarised.
2. Raw ClientHellos built here (independent of the scanner's OpenSSL, which
   cannot speak SSLv3 or TLS 1.0 itself): SSLv3, TLS 1.0 and TLS 1.1 hellos,
   TLS 1.2 hellos offering only weak or only non-forward-secret suites must
   all be refused: a fatal TLS alert record, then a real close by the server
   (EOF or reset within 5 s; a connection that just stays silent is not a
   refusal, and a timeout is never taken for a close); a TLS 1.2 ECDHE-GCM
   hello must be accepted (the probe's positive control). With
   `[tls] min_version = "1.3"` the good TLS 1.2 hello is refused too.
3. The certificate chain: what tlsfront serves (openssl s_client -showcerts)
   is exactly cert.pem (leaf, then the development CA), its last certificate
   is ca.pem, and it verifies against ca.pem for the name localhost
   (Python ssl), with ALPN h2 and http/1.1 offered.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HOST, SNI, Result, Tlsfront, Upstream, certs, client_context, log, open_tls  # noqa: E402

PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)

# Cipher-suite ids for the raw probes.
GOOD_TLS12 = [0xC02B, 0xC02C, 0xC02F, 0xC030, 0xCCA8, 0xCCA9]  # ECDHE-{ECDSA,RSA}-AES-GCM / CHACHA20
WEAK = [
    0x0001, 0x0002, 0x003B,  # NULL (MD5, SHA, SHA256)
    0x0003, 0x0006, 0x0008, 0x0014,  # EXPORT
    0x0004, 0x0005, 0xC011, 0xC007,  # RC4
    0x000A, 0x0016, 0xC012, 0xC008,  # 3DES
    0x0009,  # DES
    0x0018, 0x0034, 0x006C, 0xC018,  # anonymous (DH_anon, ECDH_anon)
    0xC009, 0xC00A, 0xC013, 0xC014, 0xC023, 0xC027,  # ECDHE with CBC (SHA-1 and SHA-256 MACs)
]
NON_FS = [0x002F, 0x0035, 0x003C, 0x009C, 0x009D]  # static RSA key exchange (incl. AES-GCM)


ALERTS = {10: "unexpected_message", 40: "handshake_failure", 47: "illegal_parameter", 50: "decode_error",
          70: "protocol_version", 71: "insufficient_security", 80: "internal_error", 109: "missing_extension",
          112: "unrecognized_name", 120: "no_application_protocol"}


def ext(kind: int, data: bytes) -> bytes:
    return kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def raw_client_hello(version: int, ciphers: list[int], record_version: int = 0x0301) -> bytes:
    name = SNI.encode()
    sni = ext(0x0000, (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name)
    groups = ext(0x000A, b"\x00\x06\x00\x1d\x00\x17\x00\x18")
    points = ext(0x000B, b"\x01\x00")
    sigalgs_list = [0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0201, 0x0203]
    sigalgs = ext(0x000D, (2 * len(sigalgs_list)).to_bytes(2, "big") + b"".join(s.to_bytes(2, "big")
                                                                                for s in sigalgs_list))
    reneg = ext(0xFF01, b"\x00")
    exts = sni + groups + points + reneg + sigalgs
    cs = b"".join(c.to_bytes(2, "big") for c in ciphers)
    body = (version.to_bytes(2, "big") + os.urandom(32) + b"\x00" + len(cs).to_bytes(2, "big") + cs
            + b"\x01\x00" + len(exts).to_bytes(2, "big") + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + record_version.to_bytes(2, "big") + len(hs).to_bytes(2, "big") + hs


PROBE_TIMEOUT = 5.0


async def _next_record(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readexactly(5), PROBE_TIMEOUT)
    length = int.from_bytes(head[3:5], "big")
    return head[0], await asyncio.wait_for(reader.readexactly(length), PROBE_TIMEOUT)


async def _ending(reader: asyncio.StreamReader) -> str:
    """How the connection ends: 'closed (EOF)' or 'closed (reset)' -- a real
    close by the server -- or 'timeout' (still open after PROBE_TIMEOUT) or
    'more data'."""
    try:
        data = await asyncio.wait_for(reader.read(1), PROBE_TIMEOUT)
    except asyncio.TimeoutError:
        return "timeout"
    except ConnectionError:
        return "closed (reset)"
    return "closed (EOF)" if not data else "more data"


async def probe(port: int, hello: bytes) -> str:
    """What the server did with `hello`, one of:
    'server-hello v0x....';
    'alert <level> <description>, then closed (EOF)|closed (reset)|timeout|more data';
    'closed (EOF)' or 'closed (reset)' (no record at all);
    'timeout' (no record and no close within PROBE_TIMEOUT seconds);
    'record type <n>'.
    A timeout is never reported as a close."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(hello)
        await writer.drain()
        try:
            kind, body = await _next_record(reader)
        except asyncio.TimeoutError:
            return "timeout"
        except asyncio.IncompleteReadError as e:
            return "closed (EOF)" if not e.partial else f"closed (EOF) inside a record ({len(e.partial)} bytes)"
        except ConnectionError:
            return "closed (reset)"
        if kind == 0x16 and body[:1] == b"\x02":
            return f"server-hello v0x{int.from_bytes(body[4:6], 'big'):04x}"
        if kind == 0x15 and len(body) >= 2:
            level = {1: "warning", 2: "fatal"}.get(body[0], f"level-{body[0]}")
            return f"alert {level} {ALERTS.get(body[1], body[1])}, then {await _ending(reader)}"
        return f"record type {kind}"
    finally:
        writer.transport.abort()


def refused_properly(got: str) -> bool:
    """Refused: a fatal TLS alert record, then the server really closed the
    connection (EOF or reset; a connection left open is not a refusal)."""
    return got.startswith("alert fatal ") and got.endswith(("then closed (EOF)", "then closed (reset)"))


PROBES = [
    # (label, version, ciphers, record version, accepted?)
    ("SSLv3 hello", 0x0300, GOOD_TLS12 + WEAK + NON_FS, 0x0300, False),
    ("TLS 1.0 hello", 0x0301, GOOD_TLS12 + WEAK + NON_FS, 0x0301, False),
    ("TLS 1.1 hello", 0x0302, GOOD_TLS12 + WEAK + NON_FS, 0x0301, False),
    ("TLS 1.2 hello, weak suites only (NULL/EXPORT/RC4/DES/3DES/anon/CBC)", 0x0303, WEAK, 0x0301, False),
    ("TLS 1.2 hello, non-forward-secret suites only (static RSA)", 0x0303, NON_FS, 0x0301, False),
    ("TLS 1.2 hello, ECDHE AES-GCM/ChaCha20 (positive control)", 0x0303, GOOD_TLS12, 0x0301, True),
]


def weak_reason(version: str, name: str) -> str | None:
    n = name.upper()
    for bad in ("NULL", "EXP", "RC4", "DES", "MD5", "ANON", "ADH", "AECDH", "PSK", "SRP", "CBC", "CAMELLIA",
                "ARIA", "SEED", "IDEA"):
        if bad in n:
            return bad
    if version == "TLSv1.3":
        return None if n.startswith("TLS_") else "unknown TLS 1.3 suite"
    if not n.startswith("ECDHE-"):
        return "no forward secrecy (not ECDHE)"
    if not any(a in n for a in ("GCM", "CHACHA20", "CCM")):
        return "not AEAD"
    if n.endswith("-SHA"):
        return "SHA-1 MAC"
    return None


def sslscan(port: int, out: Path) -> tuple[ET.Element | None, str]:
    exe = shutil.which("sslscan")
    if not exe:
        return None, "sslscan not installed (tests/long/run.sh installs it with apt-get)"
    r = subprocess.run([exe, "--no-colour", "--show-certificate", f"--xml={out}", f"--sni-name={SNI}",
                        f"{HOST}:{port}"], capture_output=True, text=True, timeout=180)
    (out.parent / "sslscan.txt").write_text(r.stdout + r.stderr)
    if r.returncode != 0 or not out.is_file():
        return None, f"sslscan exit {r.returncode}: {r.stderr[-500:]}"
    return ET.parse(out).getroot().find("ssltest"), ""


def served_chain(port: int) -> list[str]:
    r = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", SNI, "-showcerts"],
                       input="", capture_output=True, text=True, timeout=30)
    return PEM_RE.findall(r.stdout)


def norm(pem: str) -> str:
    return "".join(pem.split())


def run() -> Result:
    res = Result("tls-posture")
    up = Upstream("ok", name="tls-upstream").start()
    tf = Tlsfront("tls-posture", up.url).start()
    tf13 = Tlsfront("tls-posture-13", up.url, {"tls": {"min_version": "1.3"}}).start()
    try:
        log(f"tls-posture: sslscan against 127.0.0.1:{tf.port} (SNI {SNI})")
        root, err = sslscan(tf.port, tf.dir / "sslscan.xml")
        protocols, ciphers, groups = {}, [], []
        if root is None:
            res.check("sslscan ran", False, err)
        else:
            for p in root.findall("protocol"):
                label = ("SSLv" if p.get("type") == "ssl" else "TLSv") + p.get("version", "?")
                protocols[label] = p.get("enabled") == "1"
            for c in root.findall("cipher"):
                ciphers.append((c.get("sslversion"), c.get("cipher"), c.get("bits"), c.get("curve") or "",
                                c.get("strength") or "", c.get("status")))
            for g in root.findall("group"):
                groups.append((g.get("sslversion"), g.get("name")))
            enabled = [p for p, on in protocols.items() if on]
            log(f"  protocols: " + ", ".join(f"{p} {'enabled' if on else 'disabled'}" for p, on in protocols.items()))
            for v, name, bits, curve, strength, status in ciphers:
                log(f"  cipher: {v} {name} {bits} bits, curve {curve or '-'}, {strength}, {status}")
            log("  groups: " + ", ".join(f"{v} {n}" for v, n in groups))
            res.check("sslscan ran", bool(protocols) and bool(ciphers))
            old = [p for p in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1") if protocols.get(p)]
            res.check("no SSLv2/SSLv3/TLSv1.0/TLSv1.1 accepted", not old, ", ".join(old))
            res.check("TLSv1.2 and TLSv1.3 enabled", protocols.get("TLSv1.2") and protocols.get("TLSv1.3"))
            weak = [(v, n, weak_reason(v, n)) for v, n, *_ in ciphers if weak_reason(v, n)]
            res.check("no weak cipher, forward secrecy only (ECDHE / TLS 1.3), AEAD only", not weak,
                      "; ".join(f"{v} {n}: {why}" for v, n, why in weak))
            scanner_weak = [n for _, n, _, _, strength, _ in ciphers if strength in ("weak", "medium", "null",
                                                                                     "anonymous")]
            res.check("sslscan rates no accepted cipher weak/medium", not scanner_weak, ", ".join(scanner_weak))

        results = {}
        for label, version, suites, rec, accept in PROBES:
            got = asyncio.run(probe(tf.port, raw_client_hello(version, suites, rec)))
            results[label] = got
            log(f"  raw probe: {label}: {got}")
            if accept:
                res.check(f"raw: {label} accepted", got.startswith("server-hello v0x0303"), got)
            else:
                res.check(f"raw: {label} refused (fatal alert, then closed)", refused_properly(got), got)
        got13 = asyncio.run(probe(tf13.port, raw_client_hello(0x0303, GOOD_TLS12)))
        log(f"  raw probe: min_version = \"1.3\", good TLS 1.2 hello: {got13}")
        res.check("raw: with min_version = \"1.3\" a TLS 1.2 hello is refused (fatal alert, then closed)",
                  refused_properly(got13), got13)

        chain = served_chain(tf.port)
        c = certs()
        files = PEM_RE.findall((c / "cert.pem").read_text())
        ca = PEM_RE.findall((c / "ca.pem").read_text())
        log(f"  chain served: {len(chain)} certificate(s); cert.pem holds {len(files)}; "
            f"last served is the CA: {bool(chain) and bool(ca) and norm(chain[-1]) == norm(ca[0])}")
        res.check("served chain is cert.pem: leaf + development CA",
                  len(chain) >= 2 and [norm(x) for x in chain] == [norm(x) for x in files]
                  and norm(chain[-1]) == norm(ca[0]), f"{len(chain)} served, {len(files)} in cert.pem")

        async def verify():
            reader, writer = await open_tls(tf.port, client_context(["h2", "http/1.1"]))
            sslobj = writer.get_extra_info("ssl_object")
            info = (sslobj.version(), sslobj.cipher()[0], sslobj.selected_alpn_protocol())
            writer.close()
            return info

        try:
            version, cipher, alpn = asyncio.run(verify())
            ok, detail = True, f"{version} {cipher} ALPN {alpn}"
        except ssl.SSLError as e:
            ok, detail, version, cipher, alpn = False, str(e), "", "", ""
        log(f"  verified against ca.pem for {SNI}: {detail}")
        res.check(f"chain verifies against ca.pem for {SNI}; ALPN h2 negotiated", ok and alpn == "h2", detail)

        tls12 = sorted({n for v, n, *_ in ciphers if v == "TLSv1.2"})
        tls13 = sorted({n for v, n, *_ in ciphers if v == "TLSv1.3"})
        grp = sorted({n.split(" ")[0] for _, n in groups})
        res.summary = (f"protocols={'+'.join(p for p, on in protocols.items() if on) or '?'}; "
                       f"TLS1.3 suites={len(tls13)} TLS1.2 suites={len(tls12)} ({', '.join(tls12)}); "
                       f"groups={','.join(grp)}; chain={len(chain)} certs; old-protocol/weak/non-FS hellos refused")
    finally:
        tf.stop()
        tf13.stop()
        up.stop()
    return res


if __name__ == "__main__":
    print(run().line())
