"""ACME Renewal Information (RFC 9773) and profiles, against real pebble.

Debian's pebble 2.4 has neither, so tlsfront's `[acme] directory` is a
stand-in (ari_standin.py) in front of pebble: it adds "renewalInfo" and
meta.profiles to pebble's directory, answers renewal-info requests with the
window and Retry-After each test sets while tlsfront runs, records every
newOrder payload, and forwards everything else to pebble, which issues real
certificates (validated over tls-alpn-01 on tlsfront's HTTPS listener).

    tlsfront --> stand-in 127.0.0.1:S (/dir, /renewal-info/<certID>) --> pebble

Renewal is observed from outside: the certificate served for the name (SNI,
verified against pebble's root) gets a new serial, and the stored file in
`storage/certificates/<name>.pem` changes. The certID the stand-in expects
is computed here from the served certificate with `cryptography` (AKI
keyIdentifier and the DER content octets of the serial), independently of
tlsfront.

One pebble and one stand-in for the module; each test has its own tlsfront,
storage and name (tlsfront listens where pebble validates tls-alpn-01, one
at a time). About 2 minutes in all.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from ari_standin import AriStandIn, Pebble, cert_id, load_cert
from conftest import ANSI_RE, _LOGS, free_port, read_log, stop_process, tlsfront_bin

ISSUE_TIMEOUT = 60.0  # first certificate of a name (pebble validates, issues)
START_TIMEOUT = 20.0
DAY = 86400
# Where the contract puts a name's ARI state, relative to acme.storage.
ARI_STATE = "status/{name}.ari.json"


# --------------------------------------------------------------- fixtures


@dataclass
class CA:
    pebble: Pebble
    standin: AriStandIn
    root: Path  # pebble's issuing root

    def detail(self) -> str:
        return f"{self.standin.describe()}\n--- pebble log (tail)\n{self.pebble.log_text()[-3000:]}"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CA:
    for tool in ("pebble", "pebble-challtestsrv"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed (apt-get install pebble; scripts/test.sh does)", pytrace=False)
    binary = tlsfront_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(f"tlsfront binary not found at {binary} (cargo build, or set TLSFRONT_BIN)", pytrace=False)
    work = tmp_path_factory.mktemp("acme-ari")
    pebble = Pebble(work / "pebble")
    _LOGS["pebble (ARI tests)"] = pebble.log
    pebble.start()
    standin = None
    try:
        standin = AriStandIn(pebble, work / "standin").start()
        yield CA(pebble=pebble, standin=standin, root=pebble.root())
    finally:
        if standin is not None:
            standin.stop()
        pebble.stop()


@pytest.fixture
def standin(ca: CA) -> AriStandIn:
    ca.standin.reset()
    return ca.standin


class Tlsfront:
    """One tlsfront with an [acme] section pointed at the stand-in, listening
    where pebble validates tls-alpn-01."""

    def __init__(self, ca: CA, workdir: Path, names: list[str], extra: str = ""):
        self.ca = ca
        self.dir = workdir
        self.names = names
        self.storage = workdir / "acme"
        self.config = workdir / "tlsfront.toml"
        self.port = ca.pebble.tls_port
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.write_config(extra)

    def write_config(self, extra: str = "") -> None:
        names = ", ".join(json.dumps(n) for n in self.names)
        self.config.write_text(
            f"[listen]\nhttps = \"127.0.0.1:{self.port}\"\n\n"
            f"[acme]\nnames = [{names}]\nemail = \"ops@example.com\"\n"
            f"directory = \"{self.ca.standin.directory}\"\n"
            f"directory_ca = {json.dumps(str(self.ca.standin.trust_pem))}\n"
            f"challenges = [\"tls-alpn-01\"]\n"
            f"storage = {json.dumps(str(self.storage))}\n{extra}\n"
        )

    def start(self) -> "Tlsfront":
        log = self.dir / f"tlsfront-{len(self.logs) + 1}.log"
        self.logs.append(log)
        _LOGS[f"tlsfront (ARI) {self.dir.name} #{len(self.logs)}"] = log
        env = dict(os.environ, NO_COLOR="1")
        env.pop("TLSFRONT_CONFIG", None)
        with open(log, "wb") as logf:
            self.proc = subprocess.Popen(
                [str(tlsfront_bin()), "run", "-c", str(self.config)],
                cwd=str(self.dir), env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on https://127.0.0.1:" not in self.log_text(current=True):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"tlsfront did not start (exit {self.proc.poll()}):\n{self.log_text(current=True)}\n"
                    f"config:\n{self.config.read_text()}",
                    pytrace=False,
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log_text(self, current: bool = False) -> str:
        logs = self.logs[-1:] if current else self.logs
        return "".join(ANSI_RE.sub("", read_log(p, limit=1 << 22)) for p in logs)

    def detail(self) -> str:
        return f"--- tlsfront log\n{self.log_text()[-6000:]}\n--- {self.ca.detail()}"

    def served(self, name: str) -> x509.Certificate | None:
        """The leaf served for SNI `name`, verified against pebble's root
        (None when the handshake fails: no certificate yet)."""
        ctx = ssl.create_default_context(cafile=str(self.ca.root))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=name) as tls:
                    return load_cert(tls.getpeercert(binary_form=True))
        except (OSError, ssl.SSLError):
            return None

    def stored(self, name: str) -> bytes | None:
        try:
            return (self.storage / "certificates" / f"{name}.pem").read_bytes()
        except OSError:
            return None

    def wait_served(self, name: str, timeout: float, other_than: x509.Certificate | None = None) -> x509.Certificate:
        deadline = time.monotonic() + timeout
        while True:
            cert = self.served(name)
            if cert is not None and (other_than is None or cert.serial_number != other_than.serial_number):
                return cert
            if time.monotonic() > deadline:
                what = "a certificate" if other_than is None else f"a certificate other than serial {other_than.serial_number:x}"
                pytest.fail(f"{name}: no {what} served within {timeout:.0f}s\n{self.detail()}", pytrace=False)
            time.sleep(0.2)

    def wait_log(self, pattern: str, timeout: float) -> str:
        """The first log line matching `pattern` (regex, case-insensitive),
        with the test's directory (whose name is the test's) left out."""
        rx = re.compile(pattern, re.I)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                line = line.replace(str(self.dir.parent), "<tmp>")
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                pytest.fail(f"no log line matching {pattern!r} within {timeout:.0f}s\n{self.detail()}", pytrace=False)
            time.sleep(0.1)


@pytest.fixture
def make_tlsfront(ca: CA, standin: AriStandIn, tmp_path: Path):
    started: list[Tlsfront] = []

    def make(names: list[str], extra: str = "", sub: str = "t") -> Tlsfront:
        d = tmp_path / sub
        d.mkdir()
        tf = Tlsfront(ca, d, names, extra)
        started.append(tf)
        return tf

    yield make
    for tf in started:
        tf.stop()


def wait_for(what: str, cond, timeout: float, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s\n{detail()}", pytrace=False)
        time.sleep(0.1)


def orders_for(standin: AriStandIn, name: str) -> list[dict]:
    return [
        p for p in standin.order_payloads()
        if any(i.get("value") == name for i in p.get("identifiers", []))
    ]


def time_forms(t: float) -> list[str]:
    """Ways a point in time may be written: HTTP date (as doctor writes
    other dates) or RFC 3339 / ISO 8601, to the second, UTC."""
    d = dt.datetime.fromtimestamp(int(t), dt.timezone.utc)
    return [
        email.utils.formatdate(int(t), usegmt=True),
        d.strftime("%Y-%m-%dT%H:%M:%S"),
        d.strftime("%Y-%m-%d %H:%M:%S"),
    ]


# ------------------------------------------------------------------ tests


def test_first_order_has_no_replaces_and_a_window_in_the_past_renews_at_start(standin, make_tlsfront):
    name = "ari-start.example.com"
    standin.set(retry_after="1")  # the default window: 10 to 12 days from now
    tf = make_tlsfront([name]).start()
    first = tf.wait_served(name, ISSUE_TIMEOUT)
    old_id = cert_id(first)
    payloads = orders_for(standin, name)
    assert len(payloads) == 1, f"one order for the first certificate: {payloads}\n{tf.detail()}"
    assert "replaces" not in payloads[0], f"nothing to replace in the first order: {payloads[0]}"
    assert "profile" not in payloads[0], f"no profile configured, none sent: {payloads[0]}"
    # tlsfront asks for the window of the certificate it got, by its certID.
    wait_for(f"a renewal-info request for {old_id}", lambda: standin.renewal_info_requests(old_id), 15, tf.detail)
    stored_before = tf.stored(name)
    assert stored_before, f"certificate stored in {tf.storage}/certificates\n{tf.detail()}"
    tf.stop()

    # The CA now says: renew this one, the window is over. Retry-After is an
    # hour, so only the check at start can see it.
    now = time.time()
    standin.set_window(old_id, now - 2 * DAY, now - DAY)
    standin.set(retry_after="3600")
    restarted = time.time()
    tf.start()
    renewed = tf.wait_served(name, 15, other_than=first)
    took = time.time() - restarted
    asked = [r for r in standin.renewal_info_requests(old_id) if r.at >= restarted]
    assert asked, f"tlsfront asked for the window at start\n{tf.detail()}"
    payloads = orders_for(standin, name)
    assert len(payloads) == 2, f"one renewal order: {payloads}\n{tf.detail()}"
    assert payloads[1].get("replaces") == old_id, (
        f"the renewal order replaces the old certificate {old_id}: {payloads[1]}\n{tf.detail()}"
    )
    wait_for("the stored certificate replaced", lambda: tf.stored(name) not in (None, stored_before), 5, tf.detail)
    assert cert_id(renewed) != old_id
    print(f"renewed {took:.1f}s after the restart; replaces={old_id}")


def test_future_window_waits_and_a_window_moved_into_the_past_renews_at_the_next_check(standin, make_tlsfront):
    name = "ari-moved.example.com"
    now = time.time()
    standin.set_window(None, now + 3 * DAY, now + 4 * DAY)
    standin.set(retry_after="1")
    tf = make_tlsfront([name]).start()
    first = tf.wait_served(name, ISSUE_TIMEOUT)
    old_id = cert_id(first)
    wait_for(f"a renewal-info request for {old_id}", lambda: standin.renewal_info_requests(old_id), 15, tf.detail)
    stored_before = tf.stored(name)

    # Days away: nothing happens, while tlsfront keeps asking.
    quiet_from = time.time()
    time.sleep(5)
    checks = [r for r in standin.renewal_info_requests(old_id) if r.at >= quiet_from]
    assert len(checks) >= 3, f"with Retry-After: 1, checks kept coming ({len(checks)} in 5 s)\n{tf.detail()}"
    assert len(orders_for(standin, name)) == 1, f"no renewal before the window\n{tf.detail()}"
    assert tf.served(name).serial_number == first.serial_number
    assert tf.stored(name) == stored_before

    # The CA moves the window into the past (say, a revocation ahead).
    moved = time.time()
    standin.set_window(old_id, moved - 3600, moved - 60)
    renewed = tf.wait_served(name, 15, other_than=first)
    took = time.time() - moved
    payloads = orders_for(standin, name)
    assert len(payloads) == 2, f"{payloads}\n{tf.detail()}"
    assert payloads[1].get("replaces") == old_id, f"{payloads[1]}\n{tf.detail()}"
    wait_for("the stored certificate replaced", lambda: tf.stored(name) not in (None, stored_before), 5, tf.detail)
    assert renewed.serial_number != first.serial_number
    print(f"renewed {took:.1f}s after the window moved")


def test_retry_after_is_respected(standin, make_tlsfront):
    name = "ari-retry.example.com"
    standin.set(retry_after="3")
    tf = make_tlsfront([name]).start()
    cert = tf.wait_served(name, ISSUE_TIMEOUT)
    cid = cert_id(cert)
    wait_for(f"a renewal-info request for {cid}", lambda: standin.renewal_info_requests(cid), 15, tf.detail)
    time.sleep(0.5)
    start = time.time()
    time.sleep(7)
    end = time.time()
    times = [r.at for r in standin.renewal_info_requests(cid) if start <= r.at < end]
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:])]
    assert 2 <= len(times) <= 4, (
        f"Retry-After: 3 -> 2 to 4 renewal-info requests in 7 s, got {len(times)} (gaps {gaps})\n{tf.detail()}"
    )
    # And none sooner than Retry-After after the one before (RFC 9773
    # section 4.3.2); half a second allowed for timing here.
    assert min(gaps) >= 2.5, f"Retry-After: 3 but requests {gaps} s apart\n{tf.detail()}"
    assert len(orders_for(standin, name)) == 1, tf.detail()
    print(f"{len(times)} requests in 7 s, gaps {gaps}")


def test_profile_is_sent_and_one_the_ca_does_not_offer_is_refused(standin, make_tlsfront):
    name = "ari-profile.example.com"
    tf = make_tlsfront([name], 'profile = "shortlived"', sub="p1").start()
    tf.wait_served(name, ISSUE_TIMEOUT)
    payloads = orders_for(standin, name)
    assert len(payloads) == 1 and payloads[0].get("profile") == "shortlived", f"{payloads}\n{tf.detail()}"
    tf.stop()

    # A profile the directory does not list: no order, and the log says why.
    name = "ari-noprofile.example.com"
    tf = make_tlsfront([name], 'profile = "nope"', sub="p2")
    started = time.time()
    tf.start()
    line = tf.wait_log(r"nope.*profile|profile.*nope", 15)
    assert "classic" in line and "shortlived" in line, f"the offered profiles are listed: {line}"
    time.sleep(max(0.0, started + 5 - time.time()))
    assert orders_for(standin, name) == [], f"no order placed\n{tf.detail()}"
    assert tf.served(name) is None
    tf.stop()

    # A directory with no profiles at all (pebble 2.4 itself): the same.
    standin.set(profiles=None)
    name = "ari-noprofiles.example.com"
    tf = make_tlsfront([name], 'profile = "shortlived"', sub="p3")
    started = time.time()
    tf.start()
    line = tf.wait_log(r"shortlived.*profile|profile.*shortlived", 15)
    time.sleep(max(0.0, started + 5 - time.time()))
    assert orders_for(standin, name) == [], f"no order placed\n{tf.detail()}"
    print(line)


def test_doctor_shows_the_renewal_window_and_the_next_check(standin, make_tlsfront):
    name = "ari-doctor.example.com"
    start = (int(time.time()) // 60 + 10 * 24 * 60) * 60  # 10 days from now, whole minute
    end = start + 2 * DAY
    explanation = "https://ca.example/why-this-window"
    standin.set_window(None, start, end)
    standin.set(retry_after="600", explanation_url=explanation)
    tf = make_tlsfront([name]).start()
    cert = tf.wait_served(name, ISSUE_TIMEOUT)
    cid = cert_id(cert)
    ari_file = tf.storage / ARI_STATE.format(name=name)

    def state():
        try:
            s = json.loads(ari_file.read_text())
        except (OSError, ValueError):
            return None
        return s if s.get("window_start") == start else None

    def found() -> str:
        files = sorted(str(p.relative_to(tf.storage)) for p in tf.storage.rglob("*") if p.is_file())
        return f"expected at <storage>/{ARI_STATE.format(name=name)}; files in storage: {files}\n{tf.detail()}"

    s = wait_for(f"{ari_file} with the window", state, 15, found)
    asked = standin.renewal_info_requests(cid)
    assert asked, tf.detail()
    assert s["window_end"] == end, s
    assert start <= s["renew_at"] <= end, f"renew_at inside the window: {s}"
    assert abs(s["next_check"] - (asked[-1].at + 600)) < 10, f"next_check = the answer's time + Retry-After: {s}"
    assert s.get("explanation_url") == explanation, s

    res = subprocess.run(
        [str(tlsfront_bin()), "doctor", "--no-forms", "--config", str(tf.config),
         "--upstream", f"http://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=str(tf.dir),
        env=dict(os.environ, NO_COLOR="1"),
    )
    report = ANSI_RE.sub("", res.stdout + res.stderr)
    lines = report.splitlines()
    hits = [i for i, line in enumerate(lines) if "renewal window" in line]
    assert hits, f"doctor names the renewal window:\n{report}"
    i = hits[0]
    line = lines[i]
    assert name in line or (i > 0 and name in lines[i - 1]), f"the line is the name's:\n{report}"
    assert "next check" in line, f"next check on the same line:\n{report}"
    for what, t in (("window start", start), ("window end", end), ("next check", s["next_check"])):
        assert any(f in line for f in time_forms(t)), f"{what} ({time_forms(t)}) in: {line}"
    print(line)


def _durations(text: str) -> list[float]:
    """Every run of number+unit in `text` (humantime's "1year 7months 30days
    10h 32m", "608days", "52588800s"), in seconds."""
    units = {
        "years": 31_557_600, "year": 31_557_600, "y": 31_557_600,
        "months": 2_630_016, "month": 2_630_016, "M": 2_630_016,
        "weeks": 604_800, "week": 604_800, "w": 604_800,
        "days": 86_400, "day": 86_400, "d": 86_400,
        "hours": 3600, "hour": 3600, "h": 3600,
        "minutes": 60, "minute": 60, "min": 60, "m": 60,
        "seconds": 1, "second": 1, "secs": 1, "sec": 1, "s": 1,
        "ms": 1e-3, "us": 1e-6, "ns": 1e-9,
    }
    token = r"(\d+(?:\.\d+)?)\s?(" + "|".join(sorted(units, key=len, reverse=True)) + r")\b"
    out = []
    for run in re.finditer(rf"(?:{token}\s*)+", text):
        out.append(sum(float(n) * units[u] for n, u in re.findall(token, run.group(0))))
    return out


def test_renew_before_longer_than_the_lifetime_is_warned_and_a_third_is_used(standin, make_tlsfront):
    name = "ari-renewbefore.example.com"
    standin.set(ari=False)  # renew_before is what decides without ARI
    tf = make_tlsfront([name], 'renew_before = "100000days"').start()
    cert = tf.wait_served(name, ISSUE_TIMEOUT)
    lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
    line = tf.wait_log(r"acme\.renew_before", 10)
    assert "warn" in line.lower(), f"a warning: {line}"
    third = lifetime / 3
    assert any(abs(d - third) <= 0.02 * third for d in _durations(line)), (
        f"the value used instead, a third of the lifetime ({third:.0f} s), is in: {line}"
    )
    # Used indeed: no renewal at once, over and over.
    time.sleep(6)
    assert len(orders_for(standin, name)) == 1, f"renewed at once although a third is left\n{tf.detail()}"
    assert tf.served(name).serial_number == cert.serial_number
    assert standin.renewal_info_requests() == [], "no renewal-info without renewalInfo in the directory"
    print(line)
