"""`tlsfront doctor`: the `uncompressed_text` finding (severity info), end to end.

    tlsfront doctor -c tlsfront.toml --upstream http://127.0.0.1:PORT \\
        --public-url https://localhost:8443 --path ... --json
        --http--> tests/apps/compress_app.py (Flask, Werkzeug)

Contract (docs/doctor.md): reported when the app sends a text response of
10 KiB or more without Content-Encoding AND tlsfront's config has
`[compression] enabled = false`; not reported with compression on (the
default), nor for smaller pages, non-text types (images) or responses the
app already encoded.

Each negative case is paired with a positive one on the same app, so a
doctor that never reports the finding fails too. The byte counts in the
evidence are checked against what the app really sends (asked directly,
without Accept-Encoding, as the doctor asks).
"""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from routes_support import APPS_DIR, Apps
from test_doctor import PUBLIC_URL, DoctorRun, assert_absent, codes, get_finding, run_doctor, summary

COMPRESS_APP = APPS_DIR / "compress_app.py"
CODE = "uncompressed_text"
THRESHOLD = 10 * 1024  # "10 KiB or more"

OFF = "[compression]\nenabled = false\n"
ON = "[compression]\nenabled = true\n"


@pytest.fixture(scope="module")
def capp(tmp_path_factory):
    apps = Apps(tmp=tmp_path_factory.mktemp("doctor-compress-app"))
    try:
        yield apps.werkzeug("doctor-compress-app", COMPRESS_APP, {})
    finally:
        apps.stop_all()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, capp) -> Path:
    work = tmp_path_factory.mktemp("doctor-compression")
    (work / "empty.toml").write_text("")  # run_doctor's TLSFRONT_CONFIG: built-in defaults
    (work / "off.toml").write_text(OFF)
    (work / "on.toml").write_text(ON)
    return work


def direct(capp, path: str) -> tuple[int, dict[str, str], bytes]:
    """The app's answer as the doctor gets it: no Accept-Encoding."""
    host, port = capp.target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Host", "localhost:8443")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def doctor(workdir: Path, capp, config: str | None, *paths: str) -> DoctorRun:
    """config: a file name in workdir given with -c, or None (TLSFRONT_CONFIG=empty.toml, the defaults)."""
    extra = ["-c", str(workdir / config)] if config else []
    run = run_doctor(workdir, capp.server_url, paths, public_url=PUBLIC_URL, extra=extra)
    assert run.report is not None, run.context()
    assert run.report["upstream"].rstrip("/") == capp.server_url, run.context()
    return run


@pytest.mark.parametrize("path", ["/big.html", "/data.json", f"/sized?n={THRESHOLD}"])
def test_large_text_with_compression_off_is_reported(capp, workdir, path):
    status, headers, body = direct(capp, path)
    assert status == 200 and "content-encoding" not in headers and len(body) >= THRESHOLD, (status, headers, len(body))
    content_type = headers["content-type"]

    run = doctor(workdir, capp, "off.toml", path)
    f = get_finding(run, CODE)
    assert f["severity"] == "info", f
    assert f["tlsfront_fixes"] is True, f  # [compression] enabled = true fixes it
    assert f"GET {path}" in f["evidence"], f
    assert f"{len(body)} bytes" in f["evidence"], f"byte count {len(body)} not in evidence: {f['evidence']!r}"
    assert content_type.split(";")[0] in f["evidence"], f"{content_type!r} not in evidence: {f['evidence']!r}"
    # Info only: the report stays clean, exit 0, and nothing else is found on this page.
    assert run.report["clean"] is True and run.returncode == 0, summary(run)
    assert codes(run) == [CODE], summary(run)


@pytest.mark.parametrize("config", [None, "on.toml"], ids=["default-config", "enabled-true"])
def test_compression_on_is_not_reported(capp, workdir, config):
    run = doctor(workdir, capp, config, "/big.html", "/data.json")
    assert_absent(run, CODE)
    assert run.report["findings"] == [], summary(run)
    # The same pages with compression off: reported (the app did not change).
    control = doctor(workdir, capp, "off.toml", "/big.html", "/data.json")
    get_finding(control, CODE)


@pytest.mark.parametrize(
    "path,why",
    [
        ("/small.html", "200 bytes"),
        (f"/sized?n={THRESHOLD - 1}", "one byte under 10 KiB"),
        ("/image.png", "an image, not text"),
        ("/pregzipped.html", "already Content-Encoding: gzip"),
    ],
    ids=["small-page", "just-under-threshold", "image", "pregzipped"],
)
def test_compression_off_but_nothing_to_compress_is_not_reported(capp, workdir, path, why):
    status, headers, body = direct(capp, path)
    assert status == 200, (status, headers)
    if path == "/small.html":
        assert len(body) == 200, len(body)
    elif path.startswith("/sized"):
        assert len(body) == THRESHOLD - 1 and headers["content-type"].startswith("text/html"), headers
    elif path == "/image.png":
        # Large enough that only its type keeps it out.
        assert headers["content-type"] == "image/png" and len(body) >= THRESHOLD, (headers, len(body))
    else:
        assert headers.get("content-encoding") == "gzip" and len(body) >= THRESHOLD, (headers, len(body))

    run = doctor(workdir, capp, "off.toml", path)
    assert_absent(run, CODE)
    assert run.report["findings"] == [], f"{path} ({why})\n{summary(run)}"
    # Same config, same run shape, a big page: reported (the config was read).
    control = doctor(workdir, capp, "off.toml", "/big.html")
    get_finding(control, CODE)
