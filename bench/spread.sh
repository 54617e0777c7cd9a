#!/usr/bin/env bash
# bench/spread.sh - 2,000 concurrent HTTP/1.1 connections over TLS: tlsfront vs
# nginx, throughput, proxy CPU and how the time per request is spread.
#
# usage: bench/spread.sh          (after: cargo build --release --bin tlsfront)
#        CONNS=200 REQS_PER_CONN=20 REPS=1 bench/spread.sh     (smoke test)
#
# Method (that of the shared harness, /work/shared/bench, and bench/h3.sh):
# - the app: one nginx process rendered from the harness's
#   conf/upstream-nginx.conf.tmpl (master_process off, 1 worker: a 100-byte
#   body plus `Set-Cookie: session=abc; Path=/`), on CPU LOAD_CPU;
# - a throwaway ECDSA P-256 certificate for localhost and 127.0.0.1;
# - each proxy alone on CPU PROXY_CPU, forwarding over HTTP/1.1 keep-alive
#   with a pool of 64 idle upstream connections (both proxies' defaults):
#   tlsfront `run -c bench/tlsfront.toml --listen --upstream --cert --key`
#   (default policy, access log off); nginx rendered from the harness's
#   conf/nginx.conf.tmpl (master + 1 worker, no access log, TLSv1.2 and
#   TLSv1.3, worker_connections 16000, proxy_http_version 1.1 with
#   `keepalive 64`, X-Forwarded-For/-Proto/-Host,
#   `proxy_cookie_flags ~ secure httponly`, listen backlog 4096);
# - the open-files limit raised to NOFILE for everything started here;
# - load: h2load on CPU LOAD_CPU, `--h1 -t1 -c CONNS -n CONNS*REQS_PER_CONN`
#   (every connection opened at once, then REQS_PER_CONN requests each, one
#   at a time), TLS_AES_128_GCM_SHA256 + X25519 only (as the harness's load
#   generators), under `timeout H2LOAD_TIMEOUT`; one warm-up of
#   CONNS x WARMUP_REQS requests per proxy, then REPS rounds with the proxies
#   interleaved (order rotated each round), medians;
# - per run: req/s (h2load's, connecting included), the proxy's CPU seconds
#   (utime+stime from /proc of its processes, nginx's worker included, from
#   just before h2load starts to just after it ends), requests per proxy CPU
#   second, and h2load's "time for request", "time for connect" and "time
#   to 1st byte" lines (min, max, mean, sd, +/- sd; the last two are per
#   connection), in ms; also the upstream connections the proxy opened
#   (the kernel's TCP ActiveOpens minus h2load's CONNS) and the kernel's
#   listen-queue overflows (TcpExt ListenOverflows) during the run;
# - a run during which other processes used more than NOISE_MAX cores is
#   redone (up to NOISE_RETRIES times while the TIME_BUDGET lasts); no round
#   starts once TIME_BUDGET is spent. A kept noisy run shows in runs.tsv.
# Everything listens on 127.0.0.1; every process started here is stopped on
# exit (trap), by PID. Results: runs.tsv, summary.md, versions.txt,
# probes.txt, lost.txt (runs without a result, if any), configs/, raw/ (every
# h2load output) under OUT.
#
# environment (defaults): REPS=3 CONNS=2000 REQS_PER_CONN=200 WARMUP_REQS=5
#   PROXY_CPU=1 LOAD_CPU=0 UP_PORT=18480 (and UP_PORT+1) BASE_PORT=18743
#   TARGETS="tlsfront nginx" NOFILE=65536 H2LOAD_TIMEOUT=120 SETTLE=2
#   NOISE_MAX=0.05 NOISE_RETRIES=1 TIME_BUDGET=900 (seconds)
#   TLSFRONT=target/release/tlsfront HARNESS=/work/shared/bench
#   OUT=/tmp/spreadbench-<time>
set -uo pipefail
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
CONNS=${CONNS:-2000}
REQS_PER_CONN=${REQS_PER_CONN:-200}
WARMUP_REQS=${WARMUP_REQS:-5}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
UP_PORT=${UP_PORT:-18480}
BASE_PORT=${BASE_PORT:-18743}
NOFILE=${NOFILE:-65536}
H2LOAD_TIMEOUT=${H2LOAD_TIMEOUT:-120}
SETTLE=${SETTLE:-2}
NOISE_MAX=${NOISE_MAX:-0.05}
NOISE_RETRIES=${NOISE_RETRIES:-1}
TIME_BUDGET=${TIME_BUDGET:-900}
TLSFRONT=${TLSFRONT:-$ROOT/target/release/tlsfront}
HARNESS=${HARNESS:-/work/shared/bench}
OUT=${OUT:-/tmp/spreadbench-$(date +%Y%m%d-%H%M%S)}
read -r -a TARGETS <<<"${TARGETS:-tlsfront nginx}"
REQUESTS=$((CONNS * REQS_PER_CONN))
START=$SECONDS

for tool in taskset openssl nginx curl h2load ss awk timeout; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install nginx nghttp2-client curl openssl iproute2)"
done
for t in "${TARGETS[@]}"; do [[ $t == tlsfront || $t == nginx ]] || die "unknown proxy $t (tlsfront, nginx)"; done
[[ " ${TARGETS[*]} " == *" tlsfront "* && ! -x $TLSFRONT ]] && die "no $TLSFRONT (cargo build --release --bin tlsfront)"
for f in upstream-nginx.conf.tmpl nginx.conf.tmpl; do
    [[ -r $HARNESS/conf/$f ]] || die "no $HARNESS/conf/$f"
done
(($(nproc) > PROXY_CPU && $(nproc) > LOAD_CPU)) || die "need CPUs $PROXY_CPU and $LOAD_CPU"
((CONNS > 0 && REQS_PER_CONN > 0 && REPS > 0)) || die "CONNS, REQS_PER_CONN and REPS must be > 0"

# open files: each proxy holds CONNS client + up to CONNS upstream connections
ulimit -n "$NOFILE" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null
(($(ulimit -n) >= NOFILE)) || log "open-file limit $(ulimit -n): NOFILE=$NOFILE refused (hard limit $(ulimit -Hn))"
(($(ulimit -n) >= 2 * CONNS + 500)) || die "open-file limit $(ulimit -n) too low for CONNS=$CONNS"

# ------------------------------------------------------------ processes
init_run spreadbench 'log interrupted; exit 130'   # PIDS, RUN and the traps (lib.sh)

# ------------------------------------------------------------ measurements
CLK_TCK=$(getconf CLK_TCK)
tree_ticks() {   # utime+stime of a process and its descendants (nginx's worker)
    local sum=0 p
    for p in "$1" $(descendants "$1"); do sum=$((sum + $(proc_ticks "$p"))); done
    echo "$sum"
}
net_counter() {  # net_counter FILE PREFIX NAME : a kernel counter from /proc/net/snmp or netstat
    awk -v p="$2" -v k="$3" '$1 == p { if (!c) { for (i = 2; i <= NF; i++) if ($i == k) c = i } else { print $c; exit } }' "$1"
}

# ------------------------------------------------------------ setup
busy=$(busy_pct)
log "machine ${busy}% busy before the start; $(uptime | sed 's/.*load/load/')"
((busy > 5)) && { log "WARNING: not quiet; busiest:"; ps -eo pid,pcpu,comm --sort=-pcpu | head -6 >&2; }
{ pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; } && log "WARNING: cargo/rustc running: results will be noisy"

make_cert
# OpenSSL settings for the load generator and curl only (never the proxies)
cat >"$RUN/client-openssl.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Ciphersuites = TLS_AES_128_GCM_SHA256
Groups = X25519
EOF
CLIENT_ENV=(OPENSSL_CONF="$RUN/client-openssl.cnf")

declare -A PORT=([tlsfront]=$BASE_PORT [nginx]=$((BASE_PORT + 1)))
for p in "$UP_PORT" "$((UP_PORT + 1))" "${PORT[@]}"; do port_busy "$p" && die "port $p in use"; done

SMALL_BODY="hello world $(printf 'x%.0s' $(seq 88))"   # 100 bytes, as the harness
render() {   # render TEMPLATE DEST PORT : a harness template, as its bench.sh fills it in
    sed -e "s#@RUN@#$RUN#g" -e "s#@PORT@#$3#g" -e "s#@UP_PORT@#$UP_PORT#g" \
        -e "s#@UP_H2C_PORT@#$((UP_PORT + 1))#g" -e "s#@CERT@#$RUN/cert.pem#g" \
        -e "s#@KEY@#$RUN/key.pem#g" -e "s#@SMALL_BODY@#$SMALL_BODY#g" "$HARNESS/conf/$1" >"$2"
    cp "$2" "$OUT/configs/"
}
render upstream-nginx.conf.tmpl "$RUN/upstream.conf" 0
: >"$RUN/1m.bin"
render nginx.conf.tmpl "$RUN/nginx.conf" "${PORT[nginx]}"
ng_wc=$(grep -o 'worker_connections *[0-9]*' "$RUN/nginx.conf" | awk '{print $2; exit}')
((${ng_wc:-0} >= 2 * CONNS + 100)) || die "nginx worker_connections $ng_wc too low for CONNS=$CONNS"
cp "${CONFIG:-$ROOT/bench/tlsfront.toml}" "$OUT/configs/"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (+ uncommitted changes in src/Cargo)')"
    echo "machine: $(uname -m), $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); machine ${busy}% busy over 2 s"
    [[ -x $TLSFRONT ]] && echo "tlsfront: $("$TLSFRONT" --version 2>&1 | head -1) ($TLSFRONT, built $(date -u -r "$TLSFRONT" +%FT%TZ))"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //'); $(openssl version)"
    echo "h2load: $(h2load --version 2>&1 | head -1); curl: $(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "load: h2load --h1 -t1 -c $CONNS -n $REQUESTS ($REQS_PER_CONN per connection), $REPS rounds after a warm-up of $WARMUP_REQS per connection"
    echo "pinning: proxy CPU $PROXY_CPU; upstream nginx + h2load CPU $LOAD_CPU; open files $(ulimit -n)"
    echo "kernel: somaxconn $(cat /proc/sys/net/core/somaxconn), tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)," \
        "ip_local_port_range $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range), tcp_tw_reuse $(cat /proc/sys/net/ipv4/tcp_tw_reuse)"
} >"$OUT/versions.txt"

start_bg "$LOAD_CPU" "$RUN/upstream.log" nginx -c "$RUN/upstream.conf" -e "$RUN/upstream-error.log"
UP_PID=$LAST_PID
wait_url "http://127.0.0.1:$UP_PORT/" "$UP_PID" || die "upstream did not start: $(cat "$RUN"/upstream*.log)"
[[ $(curl -s "http://127.0.0.1:$UP_PORT/" | wc -c) == 100 ]] || die "upstream did not answer 100 bytes"

declare -A PID=()
start_target() {
    local t=$1
    case $t in
        tlsfront)
            (cd "$RUN" && exec taskset -c "$PROXY_CPU" "$TLSFRONT" run -c "${CONFIG:-$ROOT/bench/tlsfront.toml}" \
                --listen "127.0.0.1:${PORT[tlsfront]}" --upstream "http://127.0.0.1:$UP_PORT" \
                --cert "$RUN/cert.pem" --key "$RUN/key.pem") >"$OUT/raw/tlsfront.log" 2>&1 &
            LAST_PID=$!; PIDS+=("$LAST_PID") ;;
        nginx)
            start_bg "$PROXY_CPU" "$OUT/raw/nginx.log" nginx -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log" -g 'daemon off;' ;;
    esac
    PID[$t]=$LAST_PID
    wait_url "https://127.0.0.1:${PORT[$t]}/" "${PID[$t]}" || { tail -20 "$OUT/raw/$t.log" >&2; die "$t did not come up"; }
}
probe() {   # one HTTP/1.1 request as h2load makes them: status, body size, Set-Cookie; the listen backlog
    local t=$1 code size cookie backlog
    read -r code size < <(env "${CLIENT_ENV[@]}" curl -sk --http1.1 -D "$OUT/raw/$t.probe.headers" -o /dev/null \
        -w '%{http_code} %{size_download}\n' "https://127.0.0.1:${PORT[$t]}/")
    cookie=$(tr -d '\r' <"$OUT/raw/$t.probe.headers" | awk 'tolower($1) == "set-cookie:" {sub(/^[^:]*: */, ""); print}')
    backlog=$(ss -Hltn "sport = :${PORT[$t]}" | awk '{print $3; exit}')   # Send-Q of a listener
    echo "$t: HTTP/1.1 $code, $size bytes, Set-Cookie: $cookie; listen backlog $backlog" >>"$OUT/probes.txt"
    [[ $code == 200 && $size == 100 ]] || die "$t: answered $code with $size bytes, not 200 with 100"
}
for t in "${TARGETS[@]}"; do start_target "$t"; probe "$t"; done
cat "$OUT/probes.txt" >&2

h2run() {   # h2run PROXY REQUESTS
    timeout -k 5 "$H2LOAD_TIMEOUT" taskset -c "$LOAD_CPU" env "${CLIENT_ENV[@]}" \
        h2load --h1 -t1 -c"$CONNS" -n"$2" --tls13-ciphers=TLS_AES_128_GCM_SHA256 \
        "https://127.0.0.1:${PORT[$1]}/"
}

# h2load's numbers: "finished in", "requests:", and the four lines of the
# min/max/mean/sd/+-sd table, durations in ms (h2load prints us, ms or s)
H2_FIELDS=(rps elapsed_s succeeded failed req_min_ms req_max_ms req_mean_ms req_sd_ms req_within_sd_pct
    conn_min_ms conn_max_ms conn_mean_ms conn_sd_ms conn_within_sd_pct
    ttfb_min_ms ttfb_max_ms ttfb_mean_ms ttfb_sd_ms ttfb_within_sd_pct)
parse_h2load() {   # parse_h2load FILE : the H2_FIELDS, tab-separated, "-" where missing
    awk '
        function ms(s,   v) { v = s + 0
            if (s ~ /us$/) return v / 1000; if (s ~ /ms$/) return v; if (s ~ /s$/) return v * 1000; return "-" }
        function stats(line,   f, n) { sub(/^[^:]*: */, "", line); n = split(line, f, " ")
            if (n < 5) return "-\t-\t-\t-\t-"
            sub(/%$/, "", f[5])
            return sprintf("%.3f\t%.3f\t%.3f\t%.3f\t%s", ms(f[1]), ms(f[2]), ms(f[3]), ms(f[4]), f[5]) }
        /^finished in / { el = $3; sub(/,$/, "", el); el = ms(el) / 1000; rps = $4 }
        /^requests: / { for (i = 2; i < NF; i++) { if ($(i + 1) ~ /^succeeded/) ok = $i; if ($(i + 1) ~ /^failed/) fl = $i } }
        /^time for request:/ { rq = stats($0) }
        /^time for connect:/ { cn = stats($0) }
        /^time to 1st byte:/ { tb = stats($0) }
        END {
            if (rps == "" || ok == "") exit 1
            printf "%s\t%.3f\t%s\t%s\t%s\t%s\t%s\n", rps, el, ok, fl, rq ? rq : "-\t-\t-\t-\t-",
                cn ? cn : "-\t-\t-\t-\t-", tb ? tb : "-\t-\t-\t-\t-" }' "$1"
}

lost() { log "  $*"; echo "$*" >>"$OUT/lost.txt"; }   # a run without a result
run_one() {   # run_one PROXY REP TRY -> appends to runs.tsv; returns 3 when noisy
    local t=$1 rep=$2 try=$3 raw="$OUT/raw/$1.$2.$3.txt" rc p0 p1 c0 c1 w0 w1 o0 o1 l0 l1 h proto
    local cpu_s cores per load foreign upc ovf hv i
    local -A H=()
    all_ticks >"$RUN/ticks.a"; p0=$(tree_ticks "${PID[$t]}"); c0=$(cpu_line "$LOAD_CPU"); w0=$(date +%s.%N)
    o0=$(net_counter /proc/net/snmp Tcp: ActiveOpens); l0=$(net_counter /proc/net/netstat TcpExt: ListenOverflows)
    h2run "$t" "$REQUESTS" >"$raw" 2>&1; rc=$?
    all_ticks >"$RUN/ticks.b"; p1=$(tree_ticks "${PID[$t]}"); c1=$(cpu_line "$LOAD_CPU"); w1=$(date +%s.%N)
    o1=$(net_counter /proc/net/snmp Tcp: ActiveOpens); l1=$(net_counter /proc/net/netstat TcpExt: ListenOverflows)
    kill -0 "${PID[$t]}" 2>/dev/null || die "$t died (see $OUT/raw/$t.log)"
    ((rc == 124 || rc == 137)) && { lost "$t round $rep: h2load stopped after ${H2LOAD_TIMEOUT}s (see $raw)"; return 1; }
    h=$(parse_h2load "$raw") || { lost "$t round $rep: no result, h2load exit $rc (see $raw)"; return 1; }
    proto=$(sed -n 's/^Application protocol: *//p' "$raw")
    [[ $proto == http/1.1 ]] || log "  WARNING: $t negotiated '$proto', not http/1.1"
    read -r cpu_s cores per load < <(awk -v p=$((p1 - p0)) -v hz="$CLK_TCK" -v w0="$w0" -v w1="$w1" \
        -v n="$(cut -f3 <<<"$h")" -v c0="$c0" -v c1="$c1" 'BEGIN { s = p / hz; split(c0, x, " "); split(c1, y, " ")
            printf "%.2f %.3f %.0f %.1f\n", s, s / (w1 - w0), (s > 0 ? n / s : 0), 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
    foreign=$(foreign_cpu "$RUN/ticks.a" "$RUN/ticks.b" "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')")
    upc=$((o1 - o0 - CONNS)) ovf=$((l1 - l0))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$try" "$h" "$cpu_s" "$cores" "$per" \
        "$load" "$foreign" "$upc" "$ovf" "$rc" "$proto" >>"$OUT/runs.tsv"
    IFS=$'\t' read -r -a hv <<<"$h"
    for i in "${!H2_FIELDS[@]}"; do H[${H2_FIELDS[$i]}]=${hv[$i]}; done
    log "  $t round $rep: ${H[rps]} req/s in ${H[elapsed_s]}s, proxy ${cpu_s} CPU s (${cores} cores, $per requests per CPU s);" \
        "request ms min/mean/sd/max ${H[req_min_ms]}/${H[req_mean_ms]}/${H[req_sd_ms]}/${H[req_max_ms]}," \
        "connect max ${H[conn_max_ms]}; failed ${H[failed]}, upstream connects $upc, listen overflows $ovf;" \
        "load CPU $load%, other processes $foreign cores"
    awk -v f="$foreign" -v m="$NOISE_MAX" 'BEGIN {exit !(f > m)}' && return 3
    return 0
}

{ printf 'proxy\tround\ttry\t'; printf '%s\t' "${H2_FIELDS[@]}"
  printf 'proxy_cpu_s\tproxy_cores\treq_per_proxy_cpu_s\tload_cpu_pct\tforeign_cores\tupstream_connects\tlisten_overflows\th2load_exit\tprotocol\n'; } >"$OUT/runs.tsv"
log "warm-up ($CONNS connections x $WARMUP_REQS requests per proxy)"
for t in "${TARGETS[@]}"; do
    h2run "$t" $((CONNS * WARMUP_REQS)) >"$OUT/raw/$t.warmup.txt" 2>&1 || log "  $t warm-up: h2load exit $? (see $OUT/raw/$t.warmup.txt)"
    sleep "$SETTLE"
done
n=${#TARGETS[@]}
for ((rep = 1; rep <= REPS; rep++)); do
    ((SECONDS - START < TIME_BUDGET)) || { log "TIME_BUDGET ${TIME_BUDGET}s spent: no round $rep"; break; }
    log "round $rep/$REPS"
    for ((i = 0; i < n; i++)); do
        t=${TARGETS[$(((i + rep - 1) % n))]}
        for ((try = 0; ; try++)); do
            run_one "$t" "$rep" "$try"; rc=$?
            sleep "$SETTLE"   # the closed connections' last packets, before the next run
            ((rc == 3 && try < NOISE_RETRIES && SECONDS - START < TIME_BUDGET)) || break
            log "  ... other processes used CPU: redoing it"
        done
    done
done
for t in "${!PID[@]}"; do stop_pid "${PID[$t]}"; done

# ------------------------------------------------------------ summary (last try of each round counts)
{
    echo "### $CONNS concurrent HTTP/1.1 connections x $REQS_PER_CONN requests, TLS, 100-byte responses (h2load --h1), proxy on one core"
    echo
    awk -F'\t' -v order="${TARGETS[*]}" -v noise="$NOISE_MAX" '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        { k = $1 SUBSEP $2; last[k] = NR; row[NR] = $0 }
        function sorted(s, a,   n, i, j, v) { n = split(s, a, " ")
            for (i = 2; i <= n; i++) { v = a[i] + 0; for (j = i - 1; j > 0 && a[j] + 0 > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
            return n }
        function med(s,   a, n) { n = sorted(s, a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        function mn(s,   a, n) { n = sorted(s, a); return a[1] }
        function mx(s,   a, n) { n = sorted(s, a); return a[n] }
        function th(v,   s) { s = sprintf("%.0f", v); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
        function m(t, name) { return med(v[t, name]) }
        function ms(x) { return x < 10 ? sprintf("%.2f", x) : (x < 100 ? sprintf("%.1f", x) : th(x)) }
        END {
            for (k in last) { split(row[last[k]], f, "\t"); t = f[1]; rounds[t]++
                for (c in col) v[t, c] = v[t, c] " " f[col[c]]
                if (f[col["foreign_cores"]] > noise) noisy[t]++ }
            nt = split(order, ts, " ")
            print "| proxy | rounds | req/s (median) | req/s min - max | proxy CPU s | proxy cores | requests per proxy CPU s | failed (max) | upstream connects | listen overflows | load CPU % | other processes, cores (max) |"
            print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            for (i = 1; i <= nt; i++) { t = ts[i]; if (!(t in rounds)) continue
                printf "| %s%s | %d | %s | %s - %s | %.2f | %.2f | %s | %d | %s | %s | %.0f | %.3f |\n", t,
                    noisy[t] ? " [noisy x" noisy[t] "]" : "", rounds[t], th(m(t, "rps")), th(mn(v[t, "rps"])),
                    th(mx(v[t, "rps"])), m(t, "proxy_cpu_s"), m(t, "proxy_cores"), th(m(t, "req_per_proxy_cpu_s")),
                    mx(v[t, "failed"]), th(m(t, "upstream_connects")), th(m(t, "listen_overflows")),
                    m(t, "load_cpu_pct"), mx(v[t, "foreign_cores"]) }
            print ""
            print "h2load'\''s time statistics, ms (each the median over the rounds; connect and 1st byte are per connection):"
            print ""
            print "| proxy | h2load line | min | mean | sd | max | within mean +/- sd |"
            print "|---|---|---:|---:|---:|---:|---:|"
            split("req conn ttfb", ks, " "); lab["req"] = "time for request"; lab["conn"] = "time for connect"; lab["ttfb"] = "time to 1st byte"
            for (i = 1; i <= nt; i++) { t = ts[i]; if (!(t in rounds)) continue
                for (j = 1; j <= 3; j++) { p = ks[j]
                    printf "| %s | %s | %s | %s | %s | %s | %.1f %% |\n", t, lab[p], ms(m(t, p "_min_ms")), ms(m(t, p "_mean_ms")),
                        ms(m(t, p "_sd_ms")), ms(m(t, p "_max_ms")), m(t, p "_within_sd_pct") } }
        }' "$OUT/runs.tsv"
    echo
    echo "req/s = h2load's (requests / its whole run, connecting included); proxy CPU s = utime+stime of the proxy's"
    echo "processes over the run (/proc); upstream connects = TCP connections opened during the run beyond"
    echo "h2load's $CONNS (the proxy's to the app); listen overflows = the kernel's TcpExt ListenOverflows."
    [[ -s $OUT/lost.txt ]] && { echo; echo "runs without a result (not in the tables):"; sed 's/^/- /' "$OUT/lost.txt"; }
    echo
    echo '```'
    cat "$OUT/versions.txt"
    cat "$OUT/probes.txt"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "elapsed: $((SECONDS - START)) s"
    echo '```'
} >"$OUT/summary.md"
cat "$OUT/summary.md"
log "done in $((SECONDS - START)) s: $OUT/summary.md (runs in $OUT/runs.tsv, raw outputs in $OUT/raw)"
