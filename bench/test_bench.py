"""The benchmark's reading of wrk and h2load reports (run by scripts/test.sh).

A benchmark whose requests fail measures nothing: these check that every
kind of failure the tools report is counted, and that the 1 MiB scenario's
throughput comes from the bytes read, not from requests x 1 MiB.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench", Path(__file__).with_name("bench.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

WRK_BIG_WITH_RESETS = """\
Running 3s test @ https://127.0.0.1:28445/1m
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    45.12ms   10.01ms  80.00ms   70.00%
    Req/Sec   220.00     20.00   250.00     80.00%
  660 requests in 3.00s, 600.00MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
Requests/sec:    219.80
Transfer/sec:    200.00MB
"""

WRK_H1_WITH_500S = """\
Running 10s test @ https://127.0.0.1:28445/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    0.50ms  12.00ms   90.00%
    Req/Sec    24.00k     1.00k   26.00k    70.00%
  Latency Distribution
     50%    2.00ms
     75%    2.30ms
     90%    2.60ms
     99%    4.20ms
  240000 requests in 10.00s, 40.00MB read
  Non-2xx or 3xx responses: 17
Requests/sec:  24000.00
Transfer/sec:      4.00MB
"""

WRK_CLEAN = WRK_H1_WITH_500S.replace("  Non-2xx or 3xx responses: 17\n", "")

H2LOAD_WITH_FAILURES = """\
finished in 3.00s, 10000.00 req/s, 1.00MB/s
requests: 30000 total, 30000 started, 29990 done, 29980 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 29980 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_wrk_socket_errors_are_errors_and_big_rate_is_bytes_read():
    r = bench.wrk_result(WRK_BIG_WITH_RESETS)
    assert r["errors"] == 15
    assert r["bytes_per_sec"] / 1048576 == pytest.approx(200.0)


def test_wrk_non_2xx_are_errors_and_p99_is_read():
    r = bench.wrk_result(WRK_H1_WITH_500S)
    assert r["errors"] == 17
    assert r["p99"] == pytest.approx(4.2)
    assert r["rate"] == pytest.approx(24000.0)
    assert bench.wrk_result(WRK_CLEAN)["errors"] == 0


def test_wrk_run_without_requests_is_an_error():
    out = WRK_CLEAN.replace("240000 requests in", "0 requests in")
    assert bench.wrk_result(out)["errors"] == 1


def test_h2load_failed_and_unfinished_requests_are_errors():
    assert bench.h2load_result(H2LOAD_WITH_FAILURES) == {"rate": 10000.0, "errors": 20}


def test_a_run_with_errors_fails_the_benchmark():
    results = {"tlsfront": {"big": [{"rate": 1.0, "errors": 0}, {"rate": 1.0, "errors": 2}]}, "nginx": {"big": []}}
    assert bench.failed_runs(results) == ["tlsfront big (run 2): 2 errors"]
    assert bench.failed_runs({"nginx": {"h1": [{"rate": 1.0, "errors": 0}]}}) == []
