#!/usr/bin/env bash
# bench/h3.sh - HTTP/3 row: tlsfront vs Caddy, per proxy core, 100-byte responses.
#
# usage: bench/h3.sh            (after: cargo build --release --bin tlsfront --example h3load)
#
# Same method as the shared harness (/work/shared/bench): one nginx upstream
# (its conf/upstream-nginx.conf.tmpl: 100-byte body + Set-Cookie) and the load
# client on CPU LOAD_CPU, the proxy on CPU PROXY_CPU, a throwaway ECDSA P-256
# certificate, REPS rounds of DURATION seconds (after WARMUP seconds) per
# proxy, the proxies interleaved (the order rotates each round), medians.
# Load: examples/h3load.rs, CONNS QUIC connections x STREAMS requests in
# flight, TLS_AES_128_GCM_SHA256 + X25519 only. Per proxy core = req/s divided
# by the proxy's CPU time (utime+stime from /proc) over the same window.
# A run during which other processes used more than NOISE_MAX cores is redone
# up to NOISE_RETRIES times; a kept run that was still disturbed is marked.
# Everything listens on 127.0.0.1; every process started here is stopped on
# exit (trap), by PID.
#
# environment (defaults): REPS=3 DURATION=10 WARMUP=2 CONNS=10 STREAMS=10
#   PROXY_CPU=1 LOAD_CPU=0 UP_PORT=18280 TF_PORT=18543 CADDY_PORT=18544
#   TARGETS="tlsfront caddy" NOISE_MAX=0.05 NOISE_RETRIES=2 OUT=/tmp/h3bench-<time>
#   TLSFRONT=target/release/tlsfront H3LOAD=target/release/examples/h3load
#   HARNESS=/work/shared/bench (for conf/upstream-nginx.conf.tmpl)
set -uo pipefail
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-10}
STREAMS=${STREAMS:-10}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
UP_PORT=${UP_PORT:-18280}
TF_PORT=${TF_PORT:-18543}
CADDY_PORT=${CADDY_PORT:-18544}
NOISE_MAX=${NOISE_MAX:-0.05}
NOISE_RETRIES=${NOISE_RETRIES:-2}
TLSFRONT=${TLSFRONT:-$ROOT/target/release/tlsfront}
H3LOAD=${H3LOAD:-$ROOT/target/release/examples/h3load}
HARNESS=${HARNESS:-/work/shared/bench}
OUT=${OUT:-/tmp/h3bench-$(date +%Y%m%d-%H%M%S)}
read -r -a TARGETS <<<"${TARGETS:-tlsfront caddy}"

for tool in taskset openssl nginx caddy curl ss awk timeout; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install nginx caddy curl openssl iproute2)"
done
[[ -x $TLSFRONT ]] || die "no $TLSFRONT (cargo build --release)"
[[ -x $H3LOAD ]] || die "no $H3LOAD (cargo build --release --example h3load)"
[[ -r $HARNESS/conf/upstream-nginx.conf.tmpl ]] || die "no $HARNESS/conf/upstream-nginx.conf.tmpl"
(($(nproc) > PROXY_CPU && $(nproc) > LOAD_CPU)) || die "need CPUs $PROXY_CPU and $LOAD_CPU"

# ------------------------------------------------------------ processes
init_run h3bench 'exit 130'   # PIDS, RUN and the traps (lib.sh)

# ------------------------------------------------------------ measurements
CLK_TCK=$(getconf CLK_TCK)
OWN_PGRP=$(awk '{sub(/.*\) /, ""); print $3}' /proc/$$/stat)
all_ticks() {    # "pid pgrp ticks" for every process
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{p = $1; sub(/.*\) /, ""); print p, $3, $12 + $13}'
}
udp_rcvbuf_errors() { awk '/^Udp:/ {n++; if (n == 2) print $6}' /proc/net/snmp; }
foreign_cores() {   # foreign_cores A B SECONDS PGRP : CPU of processes not started by this script
    # (ours: this script's process group, and PGRP = the load client's, since
    # timeout(1) puts its command in a process group of its own)
    awk -v own="$OWN_PGRP" -v own2="$4" -v hz="$CLK_TCK" -v sec="$3" '
        NR == FNR { a[$1] = $3; next }
        $2 == own || $2 == own2 { next }
        { d = ($1 in a) ? $3 - a[$1] : $3; if (d > 0) t += d }
        END { printf "%.3f", t / hz / sec }' "$1" "$2"
}

# ------------------------------------------------------------ setup
busy=$(busy_pct)
log "machine ${busy}% busy before the start"
((busy > 5)) && { log "WARNING: not quiet; busiest:"; ps -eo pid,pcpu,comm --sort=-pcpu | head -6 >&2; }
pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null && log "WARNING: cargo/rustc running: results will be noisy"

make_cert

for p in "$UP_PORT" "$((UP_PORT + 1))" "$TF_PORT" "$CADDY_PORT"; do port_busy "$p" tu && die "port $p in use"; done
SMALL_BODY="hello world $(printf 'x%.0s' $(seq 88))"   # 100 bytes, as the harness
sed -e "s#@RUN@#$RUN#g" -e "s#@UP_PORT@#$UP_PORT#g" -e "s#@UP_H2C_PORT@#$((UP_PORT + 1))#g" \
    -e "s#@SMALL_BODY@#$SMALL_BODY#g" "$HARNESS/conf/upstream-nginx.conf.tmpl" >"$RUN/upstream.conf"
: >"$RUN/1m.bin"

cat >"$RUN/tlsfront.toml" <<EOF
# as bench/tlsfront.toml (default policy, access log off), plus listener,
# certificate and upstream; HTTP/3 on the https port's UDP twin
[log]
access = "off"
level = "warn"

[listen]
https = "127.0.0.1:$TF_PORT"
http3 = true

[tls]
cert = "$RUN/cert.pem"
key = "$RUN/key.pem"

[upstream]
url = "http://127.0.0.1:$UP_PORT"
EOF

cat >"$RUN/Caddyfile" <<EOF
# Caddy as the shared harness runs it (conf/Caddyfile.tmpl), plus h3
$(caddy_globals h1 h2 h3)
https://:$CADDY_PORT {
    bind 127.0.0.1
    tls $RUN/cert.pem $RUN/key.pem
    reverse_proxy 127.0.0.1:$UP_PORT {
        # X-Forwarded-For/-Proto/-Host are added by default in Caddy >= 2.5
        header_down Set-Cookie "^(.*)\$" "\$1; Secure; HttpOnly"
    }
}
EOF
cp "$RUN/upstream.conf" "$RUN/tlsfront.toml" "$RUN/Caddyfile" "$OUT/configs/"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock examples/h3load.rs 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "machine: $(uname -m), $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "tlsfront: $("$TLSFRONT" --version 2>&1 | head -1) ($TLSFRONT)"
    echo "caddy: $(caddy version 2>&1 | head -1)"
    echo "nginx (upstream): $(nginx -v 2>&1 | sed 's/.*: //')"
    echo "load: h3load (examples/h3load.rs) $CONNS conns x $STREAMS streams, ${DURATION}s after ${WARMUP}s warm-up, $REPS rounds"
    echo "pinning: proxy CPU $PROXY_CPU; upstream + h3load CPU $LOAD_CPU"
    echo "udp buffers: rmem_default=$(cat /proc/sys/net/core/rmem_default) rmem_max=$(cat /proc/sys/net/core/rmem_max) wmem_max=$(cat /proc/sys/net/core/wmem_max)"
} >"$OUT/versions.txt"

start_bg "$LOAD_CPU" "$RUN/upstream.log" nginx -c "$RUN/upstream.conf" -e "$RUN/upstream-error.log"
UP_PID=$LAST_PID
for ((i = 0; i < 100; i++)); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$UP_PORT/" && break; sleep 0.1; done
[[ $(curl -s "http://127.0.0.1:$UP_PORT/" | wc -c) == 100 ]] || die "upstream did not answer 100 bytes"

declare -A PID PORT
start_target() {
    local t=$1
    case $t in
        tlsfront)
            PORT[$t]=$TF_PORT
            (cd "$RUN" && exec taskset -c "$PROXY_CPU" "$TLSFRONT" run -c "$RUN/tlsfront.toml") \
                >"$OUT/raw/tlsfront.log" 2>&1 &
            LAST_PID=$!; PIDS+=("$LAST_PID") ;;
        caddy)
            PORT[$t]=$CADDY_PORT
            start_caddy "$PROXY_CPU" "$OUT/raw/caddy.log" ;;
        *) die "unknown target $t (tlsfront, caddy)" ;;
    esac
    PID[$t]=$LAST_PID
    wait_url "https://127.0.0.1:${PORT[$t]}/" "${PID[$t]}" || { tail -20 "$OUT/raw/$t.log" >&2; die "$t did not come up"; }
}

probe() {   # the UDP port is bound by the proxy, h3load gets answers, Alt-Svc over TCP
    local t=$1 port=${PORT[$1]} out udp
    udp=$(ss -Hulpn "sport = :$port" 2>/dev/null)
    [[ $udp == *"pid=${PID[$t]},"* ]] || die "$t: UDP port $port not bound by pid ${PID[$t]}: '$udp'"
    out=$(timeout 20 taskset -c "$LOAD_CPU" "$H3LOAD" "127.0.0.1:$port" localhost / 1 1 1 0.5 2>&1)
    echo "$out" >"$OUT/raw/$t.probe.txt"
    [[ $out =~ requests=([0-9]+)\ errors=0 ]] && ((BASH_REMATCH[1] > 0)) ||
        die "$t does not answer HTTP/3: $out"
    echo "$t: UDP $(grep -o "127\.0\.0\.1:$port" <<<"$udp" | head -1) bound by pid ${PID[$t]}; h3 probe: $out;" \
        "TCP response Alt-Svc: $(curl -sk -D - -o /dev/null "https://127.0.0.1:$port/" | tr -d '\r' |
        awk 'tolower($1) == "alt-svc:" {sub(/^[^:]*: /, ""); print}')" >>"$OUT/probes.txt"
}

for t in "${TARGETS[@]}"; do start_target "$t"; probe "$t"; done
cat "$OUT/probes.txt" >&2

run_one() {   # run_one TARGET REP TRY -> appends to results.tsv; returns 3 when noisy
    local t=$1 rep=$2 try=$3 port=${PORT[$1]} raw="$OUT/raw/$1.$2.$3.txt" lg
    local p0 p1 c0 c1 w0 w1 u0 u1 line rps req err cores per load foreign
    timeout -k 5 $((WARMUP + DURATION + 30)) taskset -c "$LOAD_CPU" \
        "$H3LOAD" "127.0.0.1:$port" localhost / "$CONNS" "$STREAMS" "$DURATION" "$WARMUP" >"$raw" 2>&1 &
    lg=$!
    sleep "$WARMUP"   # measure the proxy over h3load's counting window (it connects, then warms up)
    all_ticks >"$RUN/ticks.a"; p0=$(proc_ticks "${PID[$t]}"); c0=$(cpu_line "$LOAD_CPU")
    w0=$(date +%s.%N); u0=$(udp_rcvbuf_errors)
    sleep "$DURATION"
    all_ticks >"$RUN/ticks.b"; p1=$(proc_ticks "${PID[$t]}"); c1=$(cpu_line "$LOAD_CPU")
    w1=$(date +%s.%N); u1=$(udp_rcvbuf_errors)
    wait "$lg"
    kill -0 "${PID[$t]}" 2>/dev/null || die "$t died during round $rep (see $OUT/raw/$t.log)"
    line=$(grep -m1 '^requests=' "$raw") || { log "  $t round $rep: no result (see $raw)"; return 1; }
    [[ $line =~ requests=([0-9]+)\ errors=([0-9]+)\ seconds=([0-9.]+)\ rps=([0-9]+) ]] || return 1
    req=${BASH_REMATCH[1]} err=${BASH_REMATCH[2]} rps=${BASH_REMATCH[4]}
    read -r cores per load foreign < <(
        awk -v p=$((p1 - p0)) -v hz="$CLK_TCK" -v w0="$w0" -v w1="$w1" -v rps="$rps" \
            -v c0="$c0" -v c1="$c1" -v f="$(foreign_cores "$RUN/ticks.a" "$RUN/ticks.b" "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')" "$lg")" \
            'BEGIN { w = w1 - w0; c = p / hz / w; split(c0, x, " "); split(c1, y, " ")
                     printf "%.3f %.0f %.1f %s\n", c, (c > 0.05 ? rps / c : 0), 100 * (y[1] - x[1]) / (y[2] - x[2]), f }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$try" "$rps" "$per" "$cores" \
        "$load" "$foreign" "$err" "$req" "$((u1 - u0))" >>"$OUT/runs.tsv"
    log "  $t round $rep: ${rps} req/s, proxy ${cores} cores = ${per} req/s per core;" \
        "load CPU ${load}%, other processes ${foreign} cores, errors $err, UDP rcvbuf errors $((u1 - u0))"
    awk -v f="$foreign" -v m="$NOISE_MAX" 'BEGIN {exit !(f > m)}' && return 3
    return 0
}

printf 'proxy\tround\ttry\trps\tper_core\tproxy_cores\tload_cpu_pct\tforeign_cores\terrors\trequests\tudp_rcvbuf_errors\n' >"$OUT/runs.tsv"
log "warm-up"
for t in "${TARGETS[@]}"; do
    timeout 30 taskset -c "$LOAD_CPU" "$H3LOAD" "127.0.0.1:${PORT[$t]}" localhost / "$CONNS" "$STREAMS" 3 1 >/dev/null 2>&1
done
n=${#TARGETS[@]}
for ((rep = 1; rep <= REPS; rep++)); do
    log "round $rep/$REPS"
    for ((i = 0; i < n; i++)); do
        t=${TARGETS[$(((i + rep - 1) % n))]}
        for ((try = 0; ; try++)); do
            run_one "$t" "$rep" "$try"; rc=$?
            ((rc == 3 && try < NOISE_RETRIES)) || break
            log "  ... other processes used CPU: redoing it"; sleep 5
        done
        sleep 1
    done
done

# ------------------------------------------------------------ report (last try of each round counts)
{
    echo "### HTTP/3, $CONNS connections x $STREAMS streams, 100-byte responses (h3load)"
    echo
    echo "| proxy | req/s per proxy core: median | min | max | vs Caddy | req/s (raw) median | proxy CPU, cores | load CPU % | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v noise="$NOISE_MAX" -v order="${TARGETS[*]}" '
        NR == 1 { next }
        { k = $1 SUBSEP $2; last[k] = NR; row[NR] = $0 }
        function sorted(s, a,   n, i, j, v) { n = split(s, a, " ")
            for (i = 2; i <= n; i++) { v = a[i] + 0; for (j = i - 1; j > 0 && a[j] + 0 > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
            return n }
        function med(s,   a, n) { n = sorted(s, a); return a[int((n + 1) / 2)] }
        function mn(s,   a, n) { n = sorted(s, a); return a[1] }
        function mx(s,   a, n) { n = sorted(s, a); return a[n] }
        function th(v,   s) { s = sprintf("%.0f", v); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
        END {
            for (k in last) { split(row[last[k]], f, "\t"); t = f[1]
                per[t] = per[t] " " f[5]; raw[t] = raw[t] " " f[4]; cor[t] = cor[t] " " f[6]
                ld[t] = ld[t] " " f[7]; err[t] += f[9]; if (f[8] > noise) noisy[t]++ }
            nt = split(order, ts, " "); base = ("caddy" in per) ? med(per["caddy"]) : 0
            for (i = 1; i <= nt; i++) { t = ts[i]; if (!(t in per)) continue
                m = med(per[t])
                printf "| %s%s | %s | %s | %s | %s | %s | %.2f | %.0f | %d |\n", t,
                    noisy[t] ? " [noisy x" noisy[t] "]" : "", th(m), th(mn(per[t])), th(mx(per[t])),
                    base ? sprintf("%.2fx", m / base) : "-", th(med(raw[t])), med(cor[t]), med(ld[t]), err[t] }
        }' "$OUT/runs.tsv"
    echo
    echo '```'
    cat "$OUT/versions.txt"
    echo '```'
} >"$OUT/report.md"
cat "$OUT/report.md"
log "done: $OUT (runs.tsv, raw/, configs/, probes.txt)"
