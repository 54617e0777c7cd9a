#!/usr/bin/env bash
# Instructions tlsfront spends per proxied request, counted by callgrind:
# HTTP/1.1 keep-alive and HTTP/2, the default policy (forwarded headers,
# cookie hardening, redirect rewriting), the access log off. Instruction
# counts do not depend on what else the machine is doing, so this is the
# regression signal; bench/README.md records the figures with date and commit.
#   bench/instructions.sh        prints the current figures beside the recorded ones
# Environment: REQUESTS (default 4000 per protocol), PORT_BASE (default 28600),
# PROFILE_DIR (keep the callgrind profiles there, for callgrind_annotate),
# CONFIG (default bench/tlsfront.toml; bench/protect.sh passes its own, with
# "{upstream}" in it replaced by the app's address).
# Only tlsfront runs under valgrind; the app and the client (examples/reqcount.rs)
# do not. Counted: from after a warm-up (handshakes done, pool filled) to the
# last response, divided by the number of requests.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-4000}
PORT_BASE=${PORT_BASE:-28600}
up_addr=127.0.0.1:$PORT_BASE
tls_addr=127.0.0.1:$((PORT_BASE + 1))
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --quiet --bin tlsfront --example reqcount
bin=$PWD/target/release/tlsfront
load=$PWD/target/release/examples/reqcount
dir=$(mktemp -d /tmp/tlsfront-instructions.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

"$bin" cert --out "$dir/certs" --host localhost --host 127.0.0.1 >/dev/null
sed "s#{upstream}#$up_addr#g" "${CONFIG:-bench/tlsfront.toml}" >"$dir/tlsfront.toml"
"$load" upstream "$up_addr" >"$dir/upstream.log" 2>&1 &
pids+=($!)
# One CPU, as the shared harness gives the proxy: tlsfront then runs tokio's
# current-thread scheduler, the one the harness's figures come from.
taskset -c 0 valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$dir/cg.out" \
    "$bin" run -c "$dir/tlsfront.toml" --listen "$tls_addr" --upstream "http://$up_addr" \
    --cert "$dir/certs/cert.pem" --key "$dir/certs/key.pem" >"$dir/tlsfront.log" 2>&1 &
vg=$!
pids+=("$vg")
for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/${tls_addr%:*}/${tls_addr#*:}") 2>/dev/null && break
    sleep 0.2
done

# One protocol: warm up, zero the counters, send REQUESTS, dump; prints instructions per request.
count() {
    local before after n line cpid
    before=$(ls "$dir" | grep -c '^cg.out\.' || true)
    coproc CLIENT { "$load" "$@"; }
    cpid=$CLIENT_PID
    read -r line <&"${CLIENT[0]}"
    [[ $line == warm ]] || { echo "client: $line" >&2; exit 1; }
    callgrind_control -z "$vg" >/dev/null 2>&1
    echo go >&"${CLIENT[1]}"
    read -r line n <&"${CLIENT[0]}"
    [[ $line == done ]] || { echo "client failed" >&2; exit 1; }
    callgrind_control -d "$vg" >/dev/null 2>&1
    wait "$cpid" 2>/dev/null || true
    after=$(ls "$dir"/cg.out.* | sort -t. -k3 -n | tail -1)
    [[ $(ls "$dir" | grep -c '^cg.out\.') -gt $before ]] || { echo "no callgrind dump" >&2; exit 1; }
    [[ -n ${PROFILE_DIR:-} ]] && cp "$after" "$PROFILE_DIR/callgrind.$1"
    echo $(( $(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$after") / n ))
}
h1=$(count h1 "$tls_addr" 10 "$REQUESTS")
h2=$(count h2 "$tls_addr" 10 10 "$REQUESTS")

recorded() {   # the figure recorded in bench/README.md for $1
    [[ -f bench/README.md ]] || return 0
    sed -n "s#^| instructions per request, $1 | \([0-9,]*\) |.*#\1#p" bench/README.md | tr -d , | head -1
}
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo "+changes")
echo "instructions per proxied request (callgrind, $REQUESTS requests, default policy, access log off; commit $commit)"
printf '%-10s %12s %12s\n' protocol current recorded
for p in HTTP/1.1 HTTP/2; do
    cur=$h1; [[ $p == HTTP/2 ]] && cur=$h2
    rec=$(recorded "$p"); rec=${rec:-none}
    printf '%-10s %12s %12s' "$p" "$cur" "$rec"
    [[ $rec != none ]] && printf '  (%+.1f %%)' "$(echo "($cur - $rec) * 100 / $rec" | bc -l)"
    echo
done
