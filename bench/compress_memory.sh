#!/usr/bin/env bash
# bench/compress_memory.sh - tlsfront's memory with many slow compressed
# downloads at once, against the encoder budget of src/compress.rs
# (BUDGET_KIB = 256 MiB process-wide; a zstd stream takes 1300 KiB of it,
# brotli 1400, gzip 300; a response that finds the budget spent is sent
# uncompressed).
#
# usage: bench/compress_memory.sh     (after: cargo build --release --bin tlsfront)
#
# - the app: a small Python asyncio HTTP/1.1 server (on CPU LOAD_CPU) whose
#   /stream answers text/html, chunked, CHUNK bytes every INTERVAL seconds
#   for STREAM_SECONDS (varied generated HTML; a stream ends at its deadline
#   even when the chunks could not all be sent), and /small a 64 KiB page;
# - tlsfront (release) on CPU PROXY_CPU with [log] access = "off",
#   [admin] for /metrics, [compression] at its defaults; a fresh process for
#   each coding in CODINGS ("none" = Accept-Encoding: identity, the baseline);
# - the clients: h2load on CPU LOAD_CPU, STREAMS downloads at once with
#   `-H 'accept-encoding: CODING'`: PROTO=h1 opens STREAMS HTTP/1.1
#   connections, one download each; PROTO=h2 opens STREAMS/100 HTTP/2
#   connections with 100 streams each;
# - every second: tlsfront's VmRSS and VmHWM (/proc/PID/status), its
#   established client connections, the app's open streams;
# - reported per coding: RSS before (after 5 warm-up requests), RSS while
#   the downloads run (median and max over the seconds when at least 95 % of
#   them were open), peak (VmHWM), RSS after they ended, how many responses
#   tlsfront compressed (tlsfront_compressed_responses_total), tlsfront's CPU.
# Everything listens on 127.0.0.1; every process started here is stopped on
# exit (trap), by PID. ~4 minutes with the defaults; up to ~6 when tlsfront
# cannot keep up (h2load is stopped after 2 x STREAM_SECONDS + 60 s, reported).
#
# environment (defaults): STREAMS=1000 PROTO=h1 CHUNK=4096 INTERVAL=0.1
#   STREAM_SECONDS=60 CODINGS="none zstd gzip" PROXY_CPU=1 LOAD_CPU=0
#   UP_PORT=18390 TF_PORT=18653 ADMIN_PORT=18654
#   TLSFRONT=target/release/tlsfront OUT=/tmp/compressmem-<time>
set -uo pipefail
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STREAMS=${STREAMS:-1000}
PROTO=${PROTO:-h1}
CHUNK=${CHUNK:-4096}
INTERVAL=${INTERVAL:-0.1}
STREAM_SECONDS=${STREAM_SECONDS:-60}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
UP_PORT=${UP_PORT:-18390}
TF_PORT=${TF_PORT:-18653}
ADMIN_PORT=${ADMIN_PORT:-18654}
TLSFRONT=${TLSFRONT:-$ROOT/target/release/tlsfront}
OUT=${OUT:-/tmp/compressmem-$(date +%Y%m%d-%H%M%S)}
read -r -a CODINGS <<<"${CODINGS:-none zstd gzip}"
START=$SECONDS

for tool in taskset openssl curl h2load python3 ss awk timeout; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install nghttp2-client curl openssl python3)"
done
[[ -x $TLSFRONT ]] || die "no $TLSFRONT (cargo build --release --bin tlsfront)"
[[ $PROTO == h1 || $PROTO == h2 ]] || die "PROTO must be h1 or h2"
((STREAMS >= 1 && STREAMS <= 5000)) || die "STREAMS must be 1..5000"
((STREAM_SECONDS >= 5 && STREAM_SECONDS <= 300)) || die "STREAM_SECONDS must be 5..300"
(($(nproc) > PROXY_CPU && $(nproc) > LOAD_CPU)) || die "need CPUs $PROXY_CPU and $LOAD_CPU"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 2 * STREAMS + 200)) || die "open-file limit $(ulimit -n) too low for $STREAMS streams"

# ------------------------------------------------------------ processes
init_run compressmem 'log interrupted; exit 130'   # PIDS, RUN and the traps (lib.sh)

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }
compressed_total() {   # tlsfront_compressed_responses_total, all algorithms
    curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^tlsfront_compressed_responses_total/ {s += $NF} END {print s + 0}'
}
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------ setup
for p in "$UP_PORT" "$TF_PORT" "$ADMIN_PORT"; do port_busy "$p" && die "port $p in use"; done
log "load before the start: $(cut -d' ' -f1-3 /proc/loadavg)"
{ pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; } && log "WARNING: cargo/rustc running"

make_cert

cat >"$RUN/app.py" <<'PYEOF'
# Slow app: /stream sends CHUNK bytes of text/html every INTERVAL s for SECONDS
# (chunked), /small a 64 KiB page; writes "open started done bytes" to STATUS.
import asyncio, os, random, sys

port, chunk, interval, seconds, status = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rng = random.Random(42)
W = ("time year people way day man thing woman life child world school state family student group country "
     "problem hand part place case week company system program question work government number night point "
     "home water room mother area money story fact month lot right study book eye job word business issue "
     "side kind head house service friend father power hour game line end member law car city community name "
     "president team minute idea kid body information back parent face others level office door health person "
     "art war history party result change morning reason research girl guy moment air teacher force education "
     "the of and to a in is that for it as was with be by on not he this are or his from at which but have an").split()
parts, size = [], 0
while size < (1 << 20):
    i = rng.randint(1, 999999)
    p = ('<article id="a%d" class="post c%d"><h2><a href="/post/%d">%s</a></h2><p>%s.</p>'
         '<p class="meta">%d comments, %d shares</p></article>\n'
         % (i, rng.randint(0, 9), i, " ".join(rng.choices(W, k=rng.randint(3, 8))).title(),
            " ".join(rng.choices(W, k=rng.randint(20, 80))).capitalize(), rng.randint(0, 500), rng.randint(0, 99)))
    parts.append(p)
    size += len(p)
TEXT = "".join(parts).encode()
SMALL = TEXT[:65536]
stats = {"open": 0, "started": 0, "done": 0, "bytes": 0}

async def stream(writer):
    loop = asyncio.get_running_loop()
    off = rng.randrange(len(TEXT) - chunk)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n")
    t0, n = loop.time(), 0
    while loop.time() - t0 < seconds:
        data = TEXT[off:off + chunk]
        off = (off + chunk) % (len(TEXT) - chunk)
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
        stats["bytes"] += len(data)
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * interval - loop.time()))
    writer.write(b"0\r\n\r\n")
    await writer.drain()

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path.startswith(b"/stream"):
                stats["open"] += 1
                stats["started"] += 1
                try:
                    await stream(writer)
                    stats["done"] += 1
                finally:
                    stats["open"] -= 1
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(SMALL), SMALL))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, IndexError):
        pass
    finally:
        writer.close()

async def report():
    while True:
        with open(status + ".tmp", "w") as f:
            f.write("%(open)d %(started)d %(done)d %(bytes)d\n" % stats)
        os.replace(status + ".tmp", status)
        await asyncio.sleep(0.5)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    asyncio.create_task(report())
    async with server:
        await server.serve_forever()

asyncio.run(main())
PYEOF

cat >"$RUN/tlsfront.toml" <<EOF
# [compression] at its defaults (on: zstd, br, gzip); access log off
[log]
access = "off"
level = "warn"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
EOF
cp "$RUN/app.py" "$RUN/tlsfront.toml" "$OUT/configs/"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (+ uncommitted changes in src/Cargo)')"
    echo "machine: $(uname -m), $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "tlsfront: $("$TLSFRONT" --version 2>&1 | head -1) ($TLSFRONT, built $(date -u -r "$TLSFRONT" +%FT%TZ))"
    echo "h2load: $(h2load --version 2>&1 | head -1); python: $(python3 --version 2>&1)"
    echo "downloads: $STREAMS at once ($PROTO), $CHUNK bytes every ${INTERVAL}s for ${STREAM_SECONDS}s each"
    echo "pinning: tlsfront CPU $PROXY_CPU; app + h2load CPU $LOAD_CPU"
} >"$OUT/versions.txt"

start_bg "$LOAD_CPU" "$OUT/raw/app.log" python3 "$RUN/app.py" "$UP_PORT" "$CHUNK" "$INTERVAL" "$STREAM_SECONDS" "$RUN/app.status"
APP_PID=$LAST_PID
wait_url "http://127.0.0.1:$UP_PORT/small" "$APP_PID" || die "the app did not start: $(cat "$OUT/raw/app.log")"

h2args=(-t1 --h1 -c"$STREAMS" -m1 -n"$STREAMS")
[[ $PROTO == h2 ]] && h2args=(-t1 -c"$(((STREAMS + 99) / 100))" -m100 -n"$STREAMS")

printf 'coding\tt\trss_kib\thwm_kib\tclient_conns\tapp_open\tapp_bytes\tthreads\n' >"$OUT/samples.tsv"
printf 'coding\trss_before_kib\trss_during_median_kib\trss_during_max_kib\thwm_kib\trss_after_kib\tcompressed\tsucceeded\tfailed\tdata_bytes_per_response\ttlsfront_cores\tapp_bytes_pct_of_nominal\tseconds_at_95pct\n' >"$OUT/results.tsv"

run_coding() {
    local k=$1 ae pid lg t0 before c0 c1 p0 p1 w0 w1 i rss hwm conns st after raw line b0 b1 lrc thr
    [[ $k == none ]] && ae=identity || ae=$k
    raw="$OUT/raw/h2load.$k.txt"
    (cd "$RUN" && exec taskset -c "$PROXY_CPU" "$TLSFRONT" run -c "$RUN/tlsfront.toml" \
        --listen "127.0.0.1:$TF_PORT" --upstream "http://127.0.0.1:$UP_PORT" \
        --cert "$RUN/cert.pem" --key "$RUN/key.pem") >"$OUT/raw/tlsfront.$k.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_url "https://127.0.0.1:$TF_PORT/small" "$pid" || { tail -20 "$OUT/raw/tlsfront.$k.log" >&2; die "tlsfront did not come up"; }
    for i in 1 2 3 4 5; do curl -sk -o /dev/null -H "accept-encoding: $ae" "https://127.0.0.1:$TF_PORT/small"; done
    sleep 1
    before=$(status_kib "$pid" VmRSS)
    c0=$(compressed_total)
    read -r _ _ _ b0 <"$RUN/app.status"
    log "$k: tlsfront pid $pid, RSS before ${before} KiB; starting $STREAMS downloads ($PROTO, accept-encoding: $ae)"
    timeout -k 5 $((2 * STREAM_SECONDS + 60)) taskset -c "$LOAD_CPU" \
        h2load "${h2args[@]}" -H "accept-encoding: $ae" "https://127.0.0.1:$TF_PORT/stream" >"$raw" 2>&1 &
    lg=$!
    p0=$(proc_ticks "$pid"); w0=$(date +%s.%N); t0=$SECONDS
    while kill -0 "$lg" 2>/dev/null; do
        rss=$(status_kib "$pid" VmRSS); hwm=$(status_kib "$pid" VmHWM); thr=$(status_kib "$pid" Threads)
        conns=$(ss -Htn state established "( sport = :$TF_PORT )" 2>/dev/null | wc -l)
        read -r st <"$RUN/app.status" 2>/dev/null || st="0 0 0 0"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$((SECONDS - t0))" "${rss:-0}" "${hwm:-0}" "$conns" \
            "$(cut -d' ' -f1 <<<"$st")" "$(cut -d' ' -f4 <<<"$st")" "${thr:-0}" >>"$OUT/samples.tsv"
        kill -0 "$pid" 2>/dev/null || die "tlsfront died (see $OUT/raw/tlsfront.$k.log)"
        sleep 1
    done
    wait "$lg"; lrc=$?
    p1=$(proc_ticks "$pid"); w1=$(date +%s.%N)
    c1=$(compressed_total)
    sleep 3
    read -r _ _ _ b1 <"$RUN/app.status"
    after=$(status_kib "$pid" VmRSS); hwm=$(status_kib "$pid" VmHWM)
    stop_pid "$pid"
    # summary of this coding
    line=$(awk -F'\t' -v k="$k" -v n="$STREAMS" '
        $1 == k && $6 >= 0.95 * n { v[++m] = $3; if ($3 > mx) mx = $3 }
        $1 == k { b = $7 }
        END { for (i = 2; i <= m; i++) { x = v[i]; for (j = i - 1; j > 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
              printf "%s %s %s %s", (m ? v[int((m + 1) / 2)] : 0), mx + 0, m + 0, b + 0 }' "$OUT/samples.tsv")
    read -r med mx secs appbytes <<<"$line"
    local ok fail data cores pct
    ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded, .*/\1/p' "$raw")
    if ((lrc == 124 || lrc == 137)); then
        ok="cut off at $((2 * STREAM_SECONDS + 60)) s"
        log "$k: WARNING: h2load had not finished after $((2 * STREAM_SECONDS + 60)) s; stopped"
    fi
    fail=$(sed -n 's/^requests: .* succeeded, \([0-9]*\) failed, \([0-9]*\) errored.*/\1 \2/p' "$raw" | awk '{print $1 + $2}')
    data=$(sed -n 's/^traffic: .*headers.*, .*(\([0-9]*\)) data$/\1/p' "$raw")
    data=$(awk -v d="${data:-0}" -v n="${ok:-0}" 'BEGIN {printf "%.0f", (n + 0) ? d / n : 0}')
    cores=$(awk -v p=$((p1 - p0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" 'BEGIN {printf "%.3f", p / hz / (b - a)}')
    # what the app sent during this coding's run, against STREAMS x CHUNK/INTERVAL x STREAM_SECONDS
    pct=$(awk -v a="$b0" -v b="$b1" -v c="$CHUNK" -v iv="$INTERVAL" -v s="$STREAM_SECONDS" -v n="$STREAMS" \
        'BEGIN { printf "%.1f", 100 * (b - a) / (n * c * s / iv) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$before" "$med" "$mx" "$hwm" "$after" \
        "$((c1 - c0))" "${ok:-0}" "${fail:-0}" "$data" "$cores" "$pct" "$secs" >>"$OUT/results.tsv"
    log "$k: RSS during median ${med} KiB, max ${mx} KiB (${secs} s with >= 95 % open), peak ${hwm} KiB," \
        "after ${after} KiB; compressed $((c1 - c0)) of $STREAMS; downloads done: ${ok:-0}; tlsfront $cores cores"
}

for k in "${CODINGS[@]}"; do
    run_coding "$k"
    sleep 2
done

# ------------------------------------------------------------ report
{
    echo "### tlsfront memory: $STREAMS slow text/html downloads at once ($PROTO; $CHUNK bytes every ${INTERVAL}s for ${STREAM_SECONDS}s each)"
    echo
    echo "| Accept-Encoding | RSS before, MiB | RSS while running: median, MiB | max, MiB | peak (VmHWM), MiB | RSS after, MiB | compressed responses | budget allows | extra vs identity, MiB | per compressed stream, MiB | downloads ok / failed | body bytes per download | tlsfront CPU, cores | app rate, % of nominal |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v n="$STREAMS" '
        NR == 1 { next }
        { r[NR] = $0; if ($1 == "none") base = $3 }
        END { for (i = 2; i <= NR; i++) { split(r[i], f, "\t")
                cost = (f[1] == "zstd") ? 1300 : (f[1] == "br") ? 1400 : (f[1] == "gzip") ? 300 : 0
                allow = cost ? int(262144 / cost) : 0; if (allow > n) allow = n
                extra = (base != "" && f[1] != "none") ? sprintf("%.1f", (f[3] - base) / 1024) : "-"
                per = (base != "" && f[7] > 0) ? sprintf("%.2f", (f[3] - base) / 1024 / f[7]) : "-"
                printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %d | %s | %s | %s | %s / %s | %s | %s | %s |\n",
                    (f[1] == "none" ? "identity" : f[1]), f[2] / 1024, f[3] / 1024, f[4] / 1024, f[5] / 1024, f[6] / 1024,
                    f[7], (cost ? allow : "-"), extra, per, f[8], f[9], f[10], f[11], f[12] } }' "$OUT/results.tsv"
    echo
    echo "budget allows = min($STREAMS, 256 MiB / the coding's share: zstd 1300 KiB, br 1400 KiB, gzip 300 KiB);"
    echo "extra vs identity = median RSS while running minus the identity run's; per compressed stream = that / compressed responses."
    echo
    echo '```'
    cat "$OUT/versions.txt"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "elapsed: $((SECONDS - START)) s"
    echo '```'
} >"$OUT/report.md"
cat "$OUT/report.md"
log "done in $((SECONDS - START)) s: $OUT/report.md (samples in $OUT/samples.tsv)"
