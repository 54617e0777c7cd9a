#!/usr/bin/env bash
# tlsfront vs nginx and HAProxy, side by side, per proxy core (see bench/bench.py).
#   bench/run.sh --install     # first time: apt-get install nginx haproxy wrk nghttp2-client valgrind
#   bench/run.sh               # full run: 3 x 10 s per scenario, ~10 minutes
#   bench/run.sh --quick       # smoke test, ~2 minutes
#   bench/policy.sh            # callgrind instruction count of the per-request header policy
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "$@"
