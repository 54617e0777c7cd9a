"""`[access]` and `[rate_limit]` (issue 20) end to end: real requests over
TLS through a real tlsfront to a real app (tests/apps/echo_app.py), which
counts every request it gets, so "never reaches the app" is observed, not
assumed.

    requests / raw PROXY-v1 socket --https--> tlsfront --http--> echo_app

Client addresses other than 127.0.0.1 come from a PROXY v1 header (with
`listen.proxy_protocol = true` and 127.0.0.1 as the trusted proxy); a plain
connection is 127.0.0.1. Each test starts its own tlsfront (its own config,
fresh counters); the echo app is shared by the module and each test uses its
own paths.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from protect_aa_support import (
    TIMEOUT,
    Front,
    config_text,
    count_of,
    counts,
    header_values,
    pp_request,
    start_echo,
    start_front,
)
from routes_support import Apps

PROXY_LISTEN = "proxy_protocol = true"
TRUST_LOOPBACK = 'trusted_proxies = ["127.0.0.1/32"]'


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    apps = Apps(tmp=tmp_path_factory.mktemp("protect-access-apps"))
    try:
        yield start_echo(apps)
    finally:
        apps.stop_all()


@pytest.fixture
def fronts():
    started: list[Front] = []
    yield started
    for f in started:
        f.stop()


@pytest.fixture
def front_with(fronts, certdir, echo, tmp_path):
    """front_with(body, listen=..., forwarded=...) -> a running tlsfront in front of the echo app."""

    def make(body: str, **kw) -> Front:
        n = len(fronts)
        f = start_front(tmp_path / f"tlsfront{n}", certdir, config_text(certdir, echo.server_url, body, **kw), name=f"tlsfront-{n}")
        fronts.append(f)
        return f

    return make


def uniq(prefix: str) -> str:
    return f"/{prefix}-{uuid.uuid4().hex[:10]}"


def get(front: Front, path: str, headers: dict | None = None):
    with front.session() as s:
        return s.get(front.url(path), headers=headers or {}, timeout=TIMEOUT, allow_redirects=False)


# =========================================================================== [access]


def test_deny_loopback_is_403_and_never_reaches_the_app(front_with, echo):
    f = front_with('[access]\ndeny = ["127.0.0.1/32"]\n')
    path = uniq("deny")
    before = counts(echo)["total"]
    r = get(f, path)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert count_of(echo, path) == 0
    assert counts(echo)["total"] == before, "a denied request reached the app"
    f.wait_refused("access", 1)


def test_allow_list_without_the_client_is_403(front_with, echo):
    f = front_with('[access]\nallow = ["10.0.0.0/8"]\n')
    path = uniq("allow-other")
    r = get(f, path)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert count_of(echo, path) == 0
    f.wait_refused("access", 1)


def test_allow_list_with_the_client_passes(front_with, echo):
    f = front_with('[access]\nallow = ["127.0.0.0/8"]\n')
    path = uniq("allow-lo")
    r = get(f, path)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.json()["path"] == path
    assert count_of(echo, path) == 1
    assert f.refused("access") == 0


def test_deny_wins_over_allow(front_with, echo):
    # Both lists hold the client (deny as a bare IP): deny wins.
    f = front_with('[access]\nallow = ["127.0.0.0/8"]\ndeny = ["127.0.0.1"]\n')
    path = uniq("deny-wins")
    r = get(f, path)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert count_of(echo, path) == 0
    f.wait_refused("access", 1)


def test_route_access_applies_to_its_path_only(front_with, echo):
    f = front_with(
        "[[route]]\n"
        'path = "/admin"\n'
        f'url = "{echo.server_url}"\n'
        "[route.access]\n"
        'deny = ["127.0.0.0/8"]\n'
    )
    tag = uuid.uuid4().hex[:8]
    admin, public = f"/admin/{tag}", f"/public-{tag}"
    r = get(f, admin)
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert count_of(echo, admin) == 0
    r = get(f, public)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert count_of(echo, public) == 1
    f.wait_refused("access", 1)


def test_route_access_key_replaces_the_top_level_one(front_with, echo):
    # Top level denies the client; the route's own (empty) deny replaces it.
    f = front_with(
        '[access]\ndeny = ["127.0.0.1/32"]\n'
        "[[route]]\n"
        'path = "/open"\n'
        f'url = "{echo.server_url}"\n'
        "[route.access]\n"
        "deny = []\n"
    )
    tag = uuid.uuid4().hex[:8]
    r = get(f, f"/open/{tag}")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    r = get(f, f"/closed-{tag}")
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert count_of(echo, f"/open/{tag}") == 1
    assert count_of(echo, f"/closed-{tag}") == 0
    f.wait_refused("access", 1)


def test_access_uses_the_proxy_protocol_client_address(front_with, echo):
    f = front_with('[access]\ndeny = ["203.0.113.0/24"]\n', listen=PROXY_LISTEN, forwarded=TRUST_LOOPBACK)
    denied, passed = uniq("pp-denied"), uniq("pp-passed")
    r = pp_request(f, "203.0.113.7", denied)
    assert r.status == 403, (r.status, r.body[:300])
    assert count_of(echo, denied) == 0
    r = pp_request(f, "198.51.100.9", passed)
    assert r.status == 200, (r.status, r.body[:300])
    # The app got the PROXY header's address as the client's (proof that the
    # address came from the header, not from the socket).
    assert header_values(r.json()["headers"], "X-Forwarded-For") == ["198.51.100.9"], r.json()["headers"]
    assert count_of(echo, passed) == 1
    f.wait_refused("access", 1)
    line = f.wait_access(denied, 403)
    assert line.group("ip") == "203.0.113.7", line.group(0)


@pytest.mark.parametrize(
    "spoof",
    [
        {"X-Forwarded-For": "10.1.2.3"},
        {"X-Real-IP": "10.1.2.3"},
        {"Forwarded": "for=10.1.2.3"},
    ],
    ids=["x-forwarded-for", "x-real-ip", "forwarded"],
)
def test_forwarded_headers_from_an_untrusted_client_do_not_pass_an_allow_list(front_with, echo, spoof):
    # No trusted proxies: the client is 127.0.0.1, whatever it claims.
    f = front_with('[access]\nallow = ["10.0.0.0/8"]\n')
    path = uniq("spoof")
    r = get(f, path, headers=spoof)
    assert r.status_code == 403, (spoof, r.status_code, r.text[:300])
    assert count_of(echo, path) == 0
    f.wait_refused("access", 1)


def test_x_forwarded_for_from_a_trusted_proxy_is_the_client(front_with, echo):
    """The control of the test above: the same header from a trusted peer
    makes 10.1.2.3 the client, which the allow list lets in."""
    f = front_with('[access]\nallow = ["10.0.0.0/8"]\n', forwarded=TRUST_LOOPBACK)
    path = uniq("trusted-xff")
    r = get(f, path, headers={"X-Forwarded-For": "10.1.2.3"})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert count_of(echo, path) == 1
    r = get(f, uniq("trusted-no-xff"))
    assert r.status_code == 403, "without the header the client is 127.0.0.1, outside the allow list"
    f.wait_refused("access", 1)


def test_access_refusals_are_counted_exactly(front_with, echo):
    f = front_with(
        '[access]\ndeny = ["127.0.0.1/32"]\n'
        "[[route]]\n"
        'path = "/ok"\n'
        f'url = "{echo.server_url}"\n'
        "[route.access]\n"
        "deny = []\n"
    )
    assert f.refused("access") == 0
    tag = uuid.uuid4().hex[:8]
    with f.session() as s:
        for i in range(5):
            r = s.get(f.url(f"/no-{tag}-{i}"), timeout=TIMEOUT)
            assert r.status_code == 403, (i, r.status_code)
        for i in range(2):
            r = s.get(f.url(f"/ok/{tag}-{i}"), timeout=TIMEOUT)
            assert r.status_code == 200, (i, r.status_code)
    f.wait_refused("access", 5)
    time.sleep(0.3)
    assert f.refused("access") == 5
    assert f.refused("rate_limit") == 0
    assert f.refused("auth") == 0


# =========================================================================== [rate_limit]


def retry_after(r) -> int:
    value = r.headers.get("Retry-After")
    assert value is not None, f"429 without Retry-After: {dict(r.headers)}"
    assert re.fullmatch(r"[0-9]+", value), f"Retry-After is not an integer number of seconds: {value!r}"
    return int(value)


def test_rate_limit_refuses_the_fourth_and_recovers_after_retry_after(front_with, echo):
    f = front_with('[rate_limit]\nrequests = 3\nper = "2s"\nburst = 3\n')
    path = uniq("rl")
    with f.session() as s:
        statuses = [s.get(f.url(path), timeout=TIMEOUT).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        r = s.get(f.url(path), timeout=TIMEOUT)
        assert r.status_code == 429, (r.status_code, r.text[:300])
        ra = retry_after(r)
        # One request comes back every 2/3 s; a full bucket takes 2 s.
        assert 1 <= ra <= 2, ra
        assert count_of(echo, path) == 3, "the refused request reached the app"
        time.sleep(ra + 0.1)
        r = s.get(f.url(path), timeout=TIMEOUT)
        assert r.status_code == 200, f"still {r.status_code} after waiting Retry-After={ra}s"
    assert count_of(echo, path) == 4
    f.wait_refused("rate_limit", 1)


def test_route_rate_limit_on_login_leaves_the_rest_unlimited(front_with, echo):
    f = front_with(
        "[[route]]\n"
        'path = "/login"\n'
        f'url = "{echo.server_url}"\n'
        "[route.rate_limit]\n"
        'requests = 1\nper = "1m"\nburst = 1\n'
    )
    with f.session() as s:
        assert s.get(f.url("/login"), timeout=TIMEOUT).status_code == 200
        r = s.get(f.url("/login"), timeout=TIMEOUT)
        assert r.status_code == 429, (r.status_code, r.text[:300])
        assert 1 <= retry_after(r) <= 60
        path = uniq("free")
        statuses = [s.get(f.url(path), timeout=TIMEOUT).status_code for _ in range(20)]
        assert statuses == [200] * 20
        assert s.get(f.url("/login"), timeout=TIMEOUT).status_code == 429
    assert count_of(echo, path) == 20
    assert count_of(echo, "/login") == 1
    f.wait_refused("rate_limit", 2)


def test_route_rate_limit_has_its_own_counters(front_with, echo):
    # Top level 2/min; /login 1/min of its own: using one up does not touch the other.
    f = front_with(
        '[rate_limit]\nrequests = 2\nper = "1m"\nburst = 2\n'
        "[[route]]\n"
        'path = "/login"\n'
        f'url = "{echo.server_url}"\n'
        "[route.rate_limit]\n"
        'requests = 1\nper = "1m"\nburst = 1\n'
    )
    tag = uuid.uuid4().hex[:8]
    with f.session() as s:
        top = [s.get(f.url(f"/top-{tag}-{i}"), timeout=TIMEOUT).status_code for i in range(3)]
        assert top == [200, 200, 429], top
        login = [s.get(f.url(f"/login/{tag}-{i}"), timeout=TIMEOUT).status_code for i in range(2)]
        assert login == [200, 429], login
        # Routes without their own table share the top-level bucket (already empty).
        assert s.get(f.url(f"/elsewhere-{tag}"), timeout=TIMEOUT).status_code == 429
    f.wait_refused("rate_limit", 3)


def test_rate_limit_buckets_are_per_proxy_protocol_client(front_with, echo):
    f = front_with(
        '[rate_limit]\nrequests = 1\nper = "1m"\nburst = 1\n', listen=PROXY_LISTEN, forwarded=TRUST_LOOPBACK
    )
    a, b = "203.0.113.7", "198.51.100.9"
    path = uniq("pp-rl")
    assert pp_request(f, a, path).status == 200
    r = pp_request(f, a, path)
    assert r.status == 429, (r.status, r.body[:300])
    assert int(r.headers["Retry-After"]) >= 1
    # Another client address: its own full bucket.
    r = pp_request(f, b, path)
    assert r.status == 200, f"{b} was refused ({r.status}): it shares {a}'s bucket"
    assert pp_request(f, b, path).status == 429
    assert pp_request(f, a, path).status == 429
    assert count_of(echo, path) == 2
    f.wait_refused("rate_limit", 3)
    line = f.wait_access(path, 429)
    assert line.group("ip") in (a, b), line.group(0)


def test_rate_limit_refusals_are_counted_exactly(front_with, echo):
    f = front_with('[rate_limit]\nrequests = 2\nper = "1m"\n')  # burst 0 = same as requests
    path = uniq("rl-count")
    with f.session() as s:
        statuses = [s.get(f.url(path), timeout=TIMEOUT).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429], statuses
    assert count_of(echo, path) == 2
    f.wait_refused("rate_limit", 3)
    time.sleep(0.3)
    assert f.refused("rate_limit") == 3
    assert f.refused("access") == 0


def test_rate_limited_request_is_logged_with_429(front_with, echo):
    f = front_with('[rate_limit]\nrequests = 1\nper = "1m"\nburst = 1\n')
    path = uniq("rl-log")
    with f.session() as s:
        assert s.get(f.url(path), timeout=TIMEOUT).status_code == 200
        assert s.get(f.url(path), timeout=TIMEOUT).status_code == 429
    ok = f.wait_access(path, 200)
    refused = f.wait_access(path, 429)
    assert refused.group("ip") == "127.0.0.1", refused.group(0)
    assert refused.group("method") == "GET", refused.group(0)
    assert ok.group(0) != refused.group(0)
