# shellcheck shell=bash
# bench/lib.sh - what h3.sh, compress.sh and compress_memory.sh share; sourced
# by them, defines functions only. The caller runs init_run before starting
# anything: every process started here is then stopped on exit, by PID.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------ processes
init_run() {   # init_run NAME INT_ACTION : PIDS, RUN (scratch dir), $OUT/raw and configs, the traps
    PIDS=()
    RUN=$(mktemp -d "/tmp/$1-run.XXXXXX")
    mkdir -p "$OUT/raw" "$OUT/configs"
    trap cleanup EXIT
    # shellcheck disable=SC2064 # $2 is the action itself, nothing to defer
    trap "$2" INT TERM
}
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}
stop_pid() {
    local pid=$1 kids k i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    # listed before the TERM: once the parent is gone they are no longer its children
    kids=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for k in $kids; do kill -0 "$k" 2>/dev/null && kill -KILL "$k" 2>/dev/null; done
    return 0
}
cleanup() {
    local p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$RUN"
}
start_bg() {   # start_bg CPU LOGFILE CMD... ; sets LAST_PID
    local cpu=$1 logf=$2; shift 2
    taskset -c "$cpu" "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
port_busy() {   # port_busy PORT [tu] : something listens on it (t: TCP, tu: TCP or UDP, for HTTP/3)
    ss "-H${2:-t}ln" "sport = :$1" 2>/dev/null | grep -q .
}
wait_url() {   # wait_url URL PID : until URL answers; fails when PID is gone
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -sk -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------ setup
make_cert() {   # throwaway ECDSA P-256 certificate: $RUN/cert.pem, $RUN/key.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
        -keyout "$RUN/key.pem" -out "$RUN/cert.pem" -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 || die "openssl req failed"
}

# Caddy as the shared harness runs it (its conf/Caddyfile.tmpl): state under RUN
caddy_globals() {   # caddy_globals PROTOCOL... : the Caddyfile's global options block
    cat <<EOF
{
    admin off
    auto_https off
    default_sni localhost
    storage file_system $RUN/caddy-data
    servers {
        protocols $*
    }
}
EOF
}
start_caddy() {   # start_caddy CPU LOGFILE : $RUN/Caddyfile; sets LAST_PID
    mkdir -p "$RUN/caddy-home"
    # GOMAXPROCS=1: as many Go threads as the one CPU it is pinned to
    start_bg "$1" "$2" env GOMAXPROCS=1 HOME="$RUN/caddy-home" \
        XDG_DATA_HOME="$RUN/caddy-home" XDG_CONFIG_HOME="$RUN/caddy-home" \
        caddy run --config "$RUN/Caddyfile" --adapter caddyfile
}

# ------------------------------------------------------------ measurements
proc_ticks() {   # utime+stime of one process (all its threads)
    awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0
}
cpu_line() {     # busy and total ticks of one CPU
    awk -v c="cpu$1" '$1 == c {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
}
busy_pct() {     # how busy the whole machine is over 2 s, in %
    local a b
    a=$(awk '$1 == "cpu" {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat); sleep 2
    b=$(awk '$1 == "cpu" {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2])}'
}
# Noise: every process's own and reaped children's ticks (all_ticks before and
# after a run), and the cores used over it by processes this script did not
# start (foreign_cpu; reads PIDS). compress.sh and spread.sh; h3.sh has its
# own, by process group.
all_ticks() {    # "pid ppid own_ticks reaped_children_ticks" for every process
    awk '{ f = FILENAME; sub(/^\/proc\//, "", f); sub(/\/stat$/, "", f)
           sub(/^.*\) /, ""); print f, $2, $12 + $13, $14 + $15 }' /proc/[0-9]*/stat 2>/dev/null
}
foreign_cpu() {  # foreign_cpu BEFORE AFTER SECONDS: cores used by processes not started here
    local ours=" $$ " p
    for p in "${PIDS[@]}"; do ours+="$p $(descendants "$p" | paste -sd' ') "; done
    awk -v ours="$ours" -v hz="$(getconf CLK_TCK)" -v sec="$3" -v ncpu="$(nproc)" '
        NR == FNR { pp[$1] = $2; own[$1] = $3; ch[$1] = $4; next }
        { seen[$1] = 1
          if (index(ours, " " $1 " ")) next
          d = ($1 in own) ? ($3 - own[$1]) + ($4 - ch[$1]) : $3 + $4
          use[$1] += d }
        END {
            for (p in own) if (!(p in seen) && (pp[p] in use)) use[pp[p]] -= own[p] + ch[p]
            for (p in use) if (use[p] > 0) tot += use[p]
            v = tot / hz / sec; if (v > ncpu) v = ncpu
            printf "%.3f", v }' "$1" "$2"
}
