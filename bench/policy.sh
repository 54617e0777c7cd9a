#!/usr/bin/env bash
# Instructions per request for the header policy (forwarded + cookies +
# redirects + hop-by-hop, both directions), counted by callgrind: stable
# whatever else the machine is doing, so regressions are visible.
#   bench/policy.sh            # prints instructions per iteration
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --quiet --example policy_bench
bin=target/release/examples/policy_bench
count() {   # total instructions of one run with $1 iterations
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
base=$(count 0)
many=$(count 10000)
echo "header policy: $(( (many - base) / 10000 )) instructions per request+response (callgrind, 10000 iterations; includes cloning the two header maps)"
