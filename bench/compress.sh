#!/usr/bin/env bash
# bench/compress.sh - what compressing responses costs: tlsfront vs nginx vs
# Caddy, per proxy core, for a ~100 KiB HTML page, compressed and not.
#
# usage: bench/compress.sh        (after: cargo build --release --bin tlsfront)
#
# Method (that of the shared harness, /work/shared/bench, and bench/h3.sh):
# - the page: deterministic HTML made by this script (a news front page:
#   inline CSS, navigation, article cards with words drawn from a fixed
#   vocabulary, links, tables, image names), PAGE_KIB KiB, served as
#   text/html by one nginx process (master_process off, 1 worker, gzip off)
#   on CPU LOAD_CPU;
# - a throwaway ECDSA P-256 certificate for localhost and 127.0.0.1;
# - each proxy alone on CPU PROXY_CPU, forwarding over HTTP/1.1 keep-alive:
#   tlsfront (`run -c` with [log] access = "off", [compression] as default:
#   zstd level 3, br quality 4, gzip level 5); nginx 1 worker with
#   `gzip on; gzip_comp_level 5; gzip_types text/html;`; Caddy
#   (GOMAXPROCS=1) with `encode { zstd; gzip 5 }` and reverse_proxy;
# - load: h2load on CPU LOAD_CPU, HTTP/2, H2_CLIENTS connections x
#   H2_STREAMS streams, DURATION s, `-H 'accept-encoding: CODING'`
#   (identity for "none"), TLS_AES_128_GCM_SHA256 + X25519 only (as the
#   harness's load generators); one WARMUP s run per case first, then REPS
#   rounds with the cases interleaved (order rotated), medians;
# - per proxy core = req/s divided by the proxy's CPU time (utime+stime from
#   /proc, all its processes) over the same run; page MiB/s per core = that
#   x page size / 2^20 (page bytes delivered, before compression);
# - bytes per response: one curl over HTTP/2 with the same Accept-Encoding
#   (size_download: the body as sent), checked to decode (curl --compressed)
#   to the page byte for byte; the Content-Encoding that came back is
#   printed (a case that came back uncompressed says so);
# - a run during which other processes used more than NOISE_MAX cores is
#   redone (up to NOISE_RETRIES times while the TIME_BUDGET lasts); a kept
#   noisy run is marked in runs.tsv.
# Everything listens on 127.0.0.1; every process started here is stopped on
# exit (trap), by PID. ~6 minutes with the defaults.
#
# environment (defaults): REPS=3 DURATION=10 WARMUP=2 H2_CLIENTS=10 H2_STREAMS=10
#   PAGE_KIB=100 PROXY_CPU=1 LOAD_CPU=0 UP_PORT=18380 BASE_PORT=18643
#   CASES="tlsfront:none tlsfront:gzip tlsfront:br tlsfront:zstd nginx:none
#          nginx:gzip caddy:none caddy:gzip caddy:zstd"
#   NOISE_MAX=0.05 NOISE_RETRIES=1 TIME_BUDGET=450 (seconds; no redo past it)
#   TLSFRONT=target/release/tlsfront OUT=/tmp/compressbench-<time>
set -uo pipefail
. "$(dirname "$0")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
H2_CLIENTS=${H2_CLIENTS:-10}
H2_STREAMS=${H2_STREAMS:-10}
PAGE_KIB=${PAGE_KIB:-100}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
UP_PORT=${UP_PORT:-18380}
BASE_PORT=${BASE_PORT:-18643}
NOISE_MAX=${NOISE_MAX:-0.05}
NOISE_RETRIES=${NOISE_RETRIES:-1}
TIME_BUDGET=${TIME_BUDGET:-450}
TLSFRONT=${TLSFRONT:-$ROOT/target/release/tlsfront}
OUT=${OUT:-/tmp/compressbench-$(date +%Y%m%d-%H%M%S)}
read -r -a CASES <<<"${CASES:-tlsfront:none tlsfront:gzip tlsfront:br tlsfront:zstd nginx:none nginx:gzip caddy:none caddy:gzip caddy:zstd}"
START=$SECONDS

for tool in taskset openssl nginx curl h2load python3 ss awk timeout cmp; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install nginx caddy nghttp2-client curl openssl python3)"
done
(($(nproc) > PROXY_CPU && $(nproc) > LOAD_CPU)) || die "need CPUs $PROXY_CPU and $LOAD_CPU"

# which proxies the cases need
declare -A NEED=()
for c in "${CASES[@]}"; do NEED[${c%%:*}]=1; done
[[ -n ${NEED[tlsfront]:-} && ! -x $TLSFRONT ]] && die "no $TLSFRONT (cargo build --release --bin tlsfront)"
[[ -n ${NEED[caddy]:-} ]] && { command -v caddy >/dev/null || die "missing caddy (apt-get install caddy)"; }

# ------------------------------------------------------------ processes
init_run compressbench 'log interrupted; exit 130'   # PIDS, RUN and the traps (lib.sh)

# ------------------------------------------------------------ measurements
CLK_TCK=$(getconf CLK_TCK)
tree_ticks() {   # utime+stime of a process and its descendants (nginx's worker)
    local sum=0 p v
    for p in "$1" $(descendants "$1"); do
        v=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null)
        [[ -n $v ]] && sum=$((sum + v))
    done
    echo "$sum"
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

declare -A PORT=([tlsfront]=$BASE_PORT [nginx]=$((BASE_PORT + 1)) [caddy]=$((BASE_PORT + 2)))
for p in "$UP_PORT" "${PORT[@]}"; do port_busy "$p" && die "port $p in use"; done

# the page: deterministic HTML of exactly PAGE_KIB KiB
mkdir -p "$RUN/www"
python3 - "$((PAGE_KIB * 1024))" >"$RUN/www/page.html" <<'PYEOF'
import random, sys
size = int(sys.argv[1])
rng = random.Random(20261207)
W = """the of and to a in is that for it as was with be by on not he this are or his from at which but have an
they you were her she there been one all we their has would when if so what no out more can who its said up will
about into than them some could other time these two may then do first any my now such like our over man me even most
made after also did many before must through back years where much your way well down should because each just those
people how too little state good very make world still own see men work long get here between both life being under
never day same another know while last might us great old year off come since against go came right used take three
house use during without again place around however home small found thought went say part once general high upon
school every does got united left number course war until always away something fact though water less public put
think almost hand enough far took head yet government system better set told nothing night end why called didn
eyes find going look asked later knew point next program city business give group toward young days let room
president side social given present several order national possible rather second face per among form important
often things looking early white case john become large big need four within felt along children saw best church
ever least power development light seemed family interest want members mind country area others done turned
although open god service certain kind problem began different door thus help sense means whole matter perhaps
itself york times human law line above name example action company hands local show whether five history gave
today either act feet across taken past quite anyone having seen death experience body word half really field
am car words already themselves information tell together college shall money period held keep sure probably free
seems political real behind cannot miss question air office making brought whose special major heard problems
federal became study ago moment available known result street economic boy position reason change south board
individual job areas society west close turn love community true court force full seem am policy""".split()
weights = [1.0 / (i + 1) ** 0.9 for i in range(len(W))]
CATS = ["news", "sport", "culture", "science", "travel", "food", "tech", "business", "opinion", "health"]
def words(n):
    return rng.choices(W, weights, k=n)
def sentence():
    w = words(rng.randint(6, 22))
    s = " ".join(w)
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!"])
def para():
    return " ".join(sentence() for _ in range(rng.randint(2, 6)))
def title():
    return " ".join(x.capitalize() for x in words(rng.randint(3, 8)))
def slug(t):
    return t.lower().replace(" ", "-")
out = []
out.append("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>The Daily Benchmark - front page</title>
<link rel="stylesheet" href="/static/css/site.3f9a1c2e.css">
<script defer src="/static/js/app.8b2d4e71.js"></script>
<style>
body{margin:0;font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1a1a1a;background:#fafafa}
header.site{display:flex;align-items:center;justify-content:space-between;padding:12px 24px;background:#fff;border-bottom:1px solid #e5e5e5}
nav.main a{margin:0 8px;color:#333;text-decoration:none;font-weight:500}
main{max-width:1200px;margin:0 auto;padding:24px;display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:24px}
article.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);overflow:hidden}
article.card img{width:100%;height:180px;object-fit:cover}
article.card .body{padding:16px}
article.card h2{font-size:1.2rem;margin:0 0 8px}
article.card time{color:#777;font-size:.85rem}
ul.tags{list-style:none;padding:0;margin:12px 0 0;display:flex;flex-wrap:wrap;gap:6px}
ul.tags li a{font-size:.75rem;padding:2px 8px;border-radius:12px;background:#eef;color:#335}
table.stats{width:100%;border-collapse:collapse;font-size:.85rem;margin-top:12px}
table.stats td,table.stats th{border-top:1px solid #eee;padding:4px 6px;text-align:left}
footer{padding:32px 24px;background:#222;color:#ccc}
</style>
</head>
<body>
<header class="site"><a class="logo" href="/">The Daily Benchmark</a>
<nav class="main" aria-label="Sections">
""")
for c in CATS:
    out.append(f'<a href="/{c}/" data-section="{c}">{c.capitalize()}</a>\n')
out.append('</nav>\n<form class="search" action="/search" method="get"><input type="search" name="q" placeholder="Search"><button type="submit">Go</button></form>\n</header>\n<main id="content">\n')
tail = '</main>\n<footer><p>&copy; 2026 The Daily Benchmark. All rights reserved.</p><p><a href="/about">About</a> | <a href="/privacy">Privacy</a> | <a href="/contact">Contact</a></p></footer>\n</body>\n</html>\n'
n = 0
while sum(map(len, out)) + len(tail) < size - 1500:
    n += 1
    t = title(); c = rng.choice(CATS); aid = rng.randint(100000, 999999)
    img = "%08x" % rng.getrandbits(32)
    a = [f'<article class="card" id="a{aid}" data-category="{c}">\n',
         f'<a href="/{c}/{aid}-{slug(t)}"><img src="/img/{img}.jpg" alt="{t}" loading="lazy" width="640" height="360"></a>\n',
         f'<div class="body">\n<h2><a href="/{c}/{aid}-{slug(t)}">{t}</a></h2>\n',
         f'<time datetime="2026-{rng.randint(1,12):02d}-{rng.randint(1,28):02d}T{rng.randint(0,23):02d}:{rng.randint(0,59):02d}:00Z">{rng.randint(1,28)} {rng.choice(["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"])} 2026</time>\n']
    for _ in range(rng.randint(1, 3)):
        a.append(f'<p>{para()}</p>\n')
    if rng.random() < 0.3:
        a.append('<table class="stats"><tr><th>Item</th><th>Value</th><th>Change</th></tr>')
        for _ in range(rng.randint(2, 5)):
            a.append(f'<tr><td>{words(1)[0].capitalize()}</td><td>{rng.randint(1,99999):,}</td><td>{rng.uniform(-9,9):+.1f}%</td></tr>')
        a.append('</table>\n')
    a.append('<ul class="tags">' + "".join(f'<li><a href="/tag/{w}">{w}</a></li>' for w in sorted(set(words(rng.randint(2, 5))))) + '</ul>\n')
    a.append('</div>\n</article>\n')
    out.extend(a)
page = "".join(out)
page += " " * 0
filler = size - len(page) - len(tail)
if filler > 0:
    page += "<!-- " + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(max(0, filler - 10))) + " -->\n"
page += tail
sys.stdout.write(page)
PYEOF
PAGE_BYTES=$(wc -c <"$RUN/www/page.html")
((PAGE_BYTES == PAGE_KIB * 1024)) || die "page generator made $PAGE_BYTES bytes"
cp "$RUN/www/page.html" "$OUT/page.html"
URL_PATH=/page.html

cat >"$RUN/upstream.conf" <<EOF
# the app: one nginx process, no master, no access log, no compression (pinned to CPU $LOAD_CPU)
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $RUN/upstream.pid;
error_log $RUN/upstream-error.log warn;
events { worker_connections 16000; multi_accept on; }
http {
    access_log off;
    gzip off;
    types { text/html html; }
    default_type text/html;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    client_body_temp_path $RUN/up-tmp-body;
    proxy_temp_path $RUN/up-tmp-proxy;
    fastcgi_temp_path $RUN/up-tmp-fcgi;
    uwsgi_temp_path $RUN/up-tmp-uwsgi;
    scgi_temp_path $RUN/up-tmp-scgi;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        root $RUN/www;
    }
}
EOF

cat >"$RUN/tlsfront.toml" <<EOF
# tlsfront as bench/tlsfront.toml (default policy, access log off); [compression]
# left at its defaults (on: zstd, br, gzip). Listener, certificate and upstream
# come from the command line.
[log]
access = "off"
level = "warn"
EOF

cat >"$RUN/nginx.conf" <<EOF
# nginx as the shared harness runs it (1 worker, no access log), plus gzip
worker_processes 1;
worker_rlimit_nofile 20000;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 16000; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 600s;
    keepalive_requests 1000000000;
    client_body_temp_path $RUN/ng-tmp-body;
    proxy_temp_path $RUN/ng-tmp-proxy;
    fastcgi_temp_path $RUN/ng-tmp-fcgi;
    uwsgi_temp_path $RUN/ng-tmp-uwsgi;
    scgi_temp_path $RUN/ng-tmp-scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    gzip on;
    gzip_comp_level 5;
    gzip_types text/html;
    upstream up {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl http2 backlog=4096;
        ssl_certificate $RUN/cert.pem;
        ssl_certificate_key $RUN/key.pem;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF

cat >"$RUN/Caddyfile" <<EOF
# Caddy as the shared harness runs it, plus encode (gzip at nginx's and
# tlsfront's level 5; zstd at Caddy's default, klauspost "default" ~ level 3)
$(caddy_globals h1 h2)
https://127.0.0.1:${PORT[caddy]} {
    bind 127.0.0.1
    tls $RUN/cert.pem $RUN/key.pem
    encode {
        zstd
        gzip 5
    }
    reverse_proxy 127.0.0.1:$UP_PORT
}
EOF
cp "$RUN/upstream.conf" "$RUN/tlsfront.toml" "$RUN/nginx.conf" "$RUN/Caddyfile" "$OUT/configs/"

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (+ uncommitted changes in src/Cargo)')"
    echo "machine: $(uname -m), $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); machine ${busy}% busy over 2 s"
    [[ -n ${NEED[tlsfront]:-} ]] && echo "tlsfront: $("$TLSFRONT" --version 2>&1 | head -1) ($TLSFRONT, built $(date -u -r "$TLSFRONT" +%FT%TZ))"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //')"
    [[ -n ${NEED[caddy]:-} ]] && echo "caddy: $(caddy version 2>&1 | head -1)"
    echo "h2load: $(h2load --version 2>&1 | head -1); curl: $(curl --version | head -1 | cut -d' ' -f1-2)"
    echo "page: $PAGE_BYTES bytes text/html (gzip -5: $(gzip -5 -c "$RUN/www/page.html" | wc -c) bytes)"
    echo "load: h2load -c $H2_CLIENTS -m $H2_STREAMS -D $DURATION, $REPS rounds after a ${WARMUP}s warm-up per case"
    echo "pinning: proxy CPU $PROXY_CPU; upstream nginx + h2load CPU $LOAD_CPU"
} >"$OUT/versions.txt"

start_bg "$LOAD_CPU" "$RUN/upstream.log" nginx -c "$RUN/upstream.conf" -e "$RUN/upstream-error.log"
UP_PID=$LAST_PID
wait_url "http://127.0.0.1:$UP_PORT$URL_PATH" "$UP_PID" || die "upstream did not start: $(cat "$RUN"/upstream*.log)"
curl -s "http://127.0.0.1:$UP_PORT$URL_PATH" | cmp -s - "$RUN/www/page.html" || die "upstream does not serve the page"
[[ $(curl -s -o /dev/null -w '%{content_type}' "http://127.0.0.1:$UP_PORT$URL_PATH") == text/html* ]] ||
    die "upstream does not say text/html"

declare -A PID=()
start_target() {
    local t=$1
    case $t in
        tlsfront)
            (cd "$RUN" && exec taskset -c "$PROXY_CPU" "$TLSFRONT" run -c "$RUN/tlsfront.toml" \
                --listen "127.0.0.1:${PORT[tlsfront]}" --upstream "http://127.0.0.1:$UP_PORT" \
                --cert "$RUN/cert.pem" --key "$RUN/key.pem") >"$OUT/raw/tlsfront.log" 2>&1 &
            LAST_PID=$!; PIDS+=("$LAST_PID") ;;
        nginx)
            start_bg "$PROXY_CPU" "$OUT/raw/nginx.log" nginx -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log" -g 'daemon off;' ;;
        caddy)
            start_caddy "$PROXY_CPU" "$OUT/raw/caddy.log" ;;
        *) die "unknown proxy $t (tlsfront, nginx, caddy)" ;;
    esac
    PID[$t]=$LAST_PID
    wait_url "https://127.0.0.1:${PORT[$t]}$URL_PATH" "${PID[$t]}" || { tail -20 "$OUT/raw/$t.log" >&2; die "$t did not come up"; }
}
for t in tlsfront nginx caddy; do [[ -n ${NEED[$t]:-} ]] && start_target "$t"; done

ae_of() { [[ $1 == none ]] && echo identity || echo "$1"; }

# bytes per response, and what came back, once per case (HTTP/2, as h2load)
declare -A SIZE=() GOT=()
printf 'case\taccept_encoding\tcontent_encoding\tbytes\tdecoded_ok\tvary\n' >"$OUT/sizes.tsv"
for c in "${CASES[@]}"; do
    t=${c%%:*} k=${c#*:} ae=$(ae_of "${c#*:}")
    u="https://127.0.0.1:${PORT[$t]}$URL_PATH"
    SIZE[$c]=$(env "${CLIENT_ENV[@]}" curl -sk --http2 -H "accept-encoding: $ae" -D "$OUT/raw/$t.$k.headers" \
        -o "$OUT/raw/$t.$k.body" -w '%{size_download}' "$u")
    GOT[$c]=$(tr -d '\r' <"$OUT/raw/$t.$k.headers" | awk 'tolower($1) == "content-encoding:" {print $2}')
    GOT[$c]=${GOT[$c]:-none}
    ok=no
    env "${CLIENT_ENV[@]}" curl -sk --http2 --compressed -H "accept-encoding: $ae" "$u" | cmp -s - "$RUN/www/page.html" && ok=yes
    vary=$(tr -d '\r' <"$OUT/raw/$t.$k.headers" | awk 'tolower($1) == "vary:" {sub(/^[^:]*: */, ""); print}' | paste -sd,)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$ae" "${GOT[$c]}" "${SIZE[$c]}" "$ok" "$vary" >>"$OUT/sizes.tsv"
    [[ $ok == yes ]] || die "$c: the body does not decode to the page (see $OUT/raw/$t.$k.*)"
    [[ $k == none || ${GOT[$c]} == "$k" ]] || log "WARNING: $c came back with Content-Encoding ${GOT[$c]}"
    log "$c: Content-Encoding ${GOT[$c]}, ${SIZE[$c]} bytes, decodes to the page"
    rm -f "$OUT/raw/$t.$k.body"
done

h2run() {   # h2run CASE SECONDS
    local t=${1%%:*} ae
    ae=$(ae_of "${1#*:}")
    timeout -k 5 $(($2 + 30)) taskset -c "$LOAD_CPU" env "${CLIENT_ENV[@]}" \
        h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$2" --tls13-ciphers=TLS_AES_128_GCM_SHA256 \
        -H "accept-encoding: $ae" "https://127.0.0.1:${PORT[$t]}$URL_PATH"
}

run_one() {   # run_one CASE REP TRY -> appends to runs.tsv; returns 3 when noisy
    local c=$1 rep=$2 try=$3 t=${1%%:*} raw p0 p1 c0 c1 w0 w1 rps ok fail data cores per load foreign proto
    raw="$OUT/raw/${c/:/.}.$rep.$try.txt"
    all_ticks >"$RUN/ticks.a"; p0=$(tree_ticks "${PID[$t]}"); c0=$(cpu_line "$LOAD_CPU"); w0=$(date +%s.%N)
    h2run "$c" "$DURATION" >"$raw" 2>&1
    all_ticks >"$RUN/ticks.b"; p1=$(tree_ticks "${PID[$t]}"); c1=$(cpu_line "$LOAD_CPU"); w1=$(date +%s.%N)
    kill -0 "${PID[$t]}" 2>/dev/null || die "$t died (see $OUT/raw/$t.log)"
    rps=$(sed -n 's/^finished in [0-9.]*s, \([0-9.]*\) req\/s.*/\1/p' "$raw")
    ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded, \([0-9]*\) failed, \([0-9]*\) errored.*/\1/p' "$raw")
    fail=$(sed -n 's/^requests: .* succeeded, \([0-9]*\) failed, \([0-9]*\) errored.*/\1 \2/p' "$raw" | awk '{print $1 + $2}')
    data=$(sed -n 's/^traffic: .*headers.*, .*(\([0-9]*\)) data$/\1/p' "$raw")
    proto=$(sed -n 's/^Application protocol: *//p' "$raw")
    [[ -n $rps && -n $ok ]] || { log "  $c round $rep: no result (see $raw)"; return 1; }
    [[ $proto == h2 ]] || log "  WARNING: $c negotiated '$proto', not h2"
    read -r cores per load < <(awk -v p=$((p1 - p0)) -v hz="$CLK_TCK" -v w0="$w0" -v w1="$w1" -v rps="$rps" \
        -v c0="$c0" -v c1="$c1" 'BEGIN { c = p / hz / (w1 - w0); split(c0, x, " "); split(c1, y, " ")
            printf "%.3f %.1f %.1f\n", c, (c > 0.05 ? rps / c : 0), 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
    foreign=$(foreign_cpu "$RUN/ticks.a" "$RUN/ticks.b" "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$rep" "$try" "$rps" "$per" "$cores" "$load" \
        "$foreign" "${fail:-0}" "$ok" "$(awk -v d="${data:-0}" -v n="$ok" 'BEGIN {printf "%.0f", n ? d / n : 0}')" >>"$OUT/runs.tsv"
    log "  $c round $rep: $rps req/s, proxy $cores cores = $per req/s per core; load CPU $load%," \
        "other processes $foreign cores, failed ${fail:-0}"
    awk -v f="$foreign" -v m="$NOISE_MAX" 'BEGIN {exit !(f > m)}' && return 3
    return 0
}

printf 'case\tround\ttry\trps\tper_core\tproxy_cores\tload_cpu_pct\tforeign_cores\tfailed\tsucceeded\tdata_bytes_per_response\n' >"$OUT/runs.tsv"
log "warm-up (${WARMUP}s per case)"
for c in "${CASES[@]}"; do h2run "$c" "$WARMUP" >/dev/null 2>&1; done
n=${#CASES[@]}
for ((rep = 1; rep <= REPS; rep++)); do
    log "round $rep/$REPS"
    for ((i = 0; i < n; i++)); do
        c=${CASES[$(((i + rep - 1) % n))]}
        for ((try = 0; ; try++)); do
            run_one "$c" "$rep" "$try"; rc=$?
            ((rc == 3 && try < NOISE_RETRIES && SECONDS - START < TIME_BUDGET)) || break
            log "  ... other processes used CPU: redoing it"; sleep 2
        done
    done
done
for t in "${!PID[@]}"; do stop_pid "${PID[$t]}"; done

# ------------------------------------------------------------ report (last try of each round counts)
for c in "${CASES[@]}"; do printf '%s\t%s\t%s\n' "$c" "${SIZE[$c]}" "${GOT[$c]}"; done >"$RUN/sizes"
{
    echo "### Compression: ${PAGE_BYTES}-byte HTML page, HTTP/2 ($H2_CLIENTS connections x $H2_STREAMS streams, h2load), proxy on one core"
    echo
    echo "| proxy | coding | bytes per response | req/s (median) | page MiB/s (raw) | proxy CPU, cores | page MiB/s per proxy core | vs same proxy uncompressed | vs nginx gzip | load CPU % | other processes, cores |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v page="$PAGE_BYTES" -v order="${CASES[*]}" -v noise="$NOISE_MAX" '
        FILENAME ~ /sizes$/ { size[$1] = $2; got[$1] = $3; next }
        FNR == 1 { next }
        { k = $1 SUBSEP $2; last[k] = FNR; row[FNR] = $0 }
        function sorted(s, a,   n, i, j, v) { n = split(s, a, " ")
            for (i = 2; i <= n; i++) { v = a[i] + 0; for (j = i - 1; j > 0 && a[j] + 0 > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
            return n }
        function med(s,   a, n) { n = sorted(s, a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        function mx(s,   a, n) { n = sorted(s, a); return a[n] }
        function th(v,   s) { s = sprintf("%.0f", v); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
        END {
            for (k in last) { split(row[last[k]], f, "\t"); c = f[1]
                per[c] = per[c] " " f[5]; rps[c] = rps[c] " " f[4]; cor[c] = cor[c] " " f[6]
                ld[c] = ld[c] " " f[7]; fo[c] = fo[c] " " f[8] }
            nc = split(order, cs, " ")
            for (i = 1; i <= nc; i++) if (cs[i] in per) mib[cs[i]] = med(per[cs[i]]) * page / 1048576
            ng = ("nginx:gzip" in mib) ? mib["nginx:gzip"] : 0
            for (i = 1; i <= nc; i++) { c = cs[i]; if (!(c in per)) continue
                split(c, pk, ":"); base = pk[1] ":none"
                coding = pk[2]; if (got[c] != pk[2] && !(pk[2] == "none" && got[c] == "none")) coding = coding " (sent " got[c] ")"
                printf "| %s | %s | %s | %s | %.1f | %.2f | %.1f | %s | %s | %.0f | %.3f |\n", pk[1], coding, th(size[c]),
                    th(med(rps[c])), med(rps[c]) * page / 1048576, med(cor[c]), mib[c],
                    (((base in mib) && mib[base] > 0) ? sprintf("%.2fx", mib[c] / mib[base]) : "-"),
                    (ng > 0 ? sprintf("%.2fx", mib[c] / ng) : "-"), med(ld[c]), mx(fo[c]) } }' "$RUN/sizes" "$OUT/runs.tsv"
    echo
    echo "page MiB/s (raw) = req/s x $PAGE_BYTES / 2^20 with the proxy pinned to one core;"
    echo "page MiB/s per proxy core = median over the rounds of (req/s / proxy CPU cores) x $PAGE_BYTES / 2^20;"
    echo "bytes per response = the body as sent (curl size_download, HTTP/2); other processes = the most any kept run saw."
} >"$OUT/report.md"
{ echo; echo '```'; cat "$OUT/versions.txt"; echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"; echo "elapsed: $((SECONDS - START)) s"; echo '```'; } >>"$OUT/report.md"
cat "$OUT/report.md"
log "done in $((SECONDS - START)) s: $OUT/report.md (runs in $OUT/runs.tsv, raw outputs in $OUT/raw)"
