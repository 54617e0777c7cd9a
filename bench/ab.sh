#!/usr/bin/env bash
# bench/ab.sh - two (or more) tlsfront builds side by side, interleaved: the
# quick check of one step of a performance change before the shared harness.
#
# usage: bench/ab.sh h1|h2 BIN_A BIN_B ...     (REPS=3 DUR=8)
#
# Each round runs every binary once, in the order given: tlsfront on CPU 1
# (bench/tlsfront.toml: default policy, access log off) in front of
# examples/reqcount.rs's upstream (100-byte body + Set-Cookie) on CPU 0;
# h2load on CPU 0 (h1: 50 keep-alive connections; h2: 10 connections x 10
# streams; TLS_AES_128_GCM_SHA256), 1 s warm-up then DUR s. Prints req/s,
# the proxy's CPU seconds (utime+stime from /proc) and requests per proxy
# CPU second. Copy a binary aside (cp target/release/tlsfront /tmp/a) before
# building the next. Everything on 127.0.0.1; not a substitute for the
# shared harness (no peers), only for comparing tlsfront with itself.
set -u
proto=$1; shift; REPS=${REPS:-3}; DUR=${DUR:-8}
cd /work/main
d=$(mktemp -d); up=127.0.0.1:18941
target/release/tlsfront cert --out $d/certs --host localhost --host 127.0.0.1 >/dev/null
taskset -c 0 target/release/examples/reqcount upstream $up >/dev/null 2>&1 & upid=$!
sed "s#{upstream}#$up#g" bench/tlsfront.toml > $d/t.toml
run() { # bin port
  local bin=$1 port=$2
  taskset -c 1 $bin run -c $d/t.toml --listen 127.0.0.1:$port --upstream http://$up --cert $d/certs/cert.pem --key $d/certs/key.pem >/dev/null 2>&1 & local p=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  if [ $proto = h1 ]; then a="--h1 -c 50 -m 1"; else a="-c 10 -m 10"; fi
  taskset -c 0 h2load $a -D 1 --tls13-ciphers=TLS_AES_128_GCM_SHA256 https://127.0.0.1:$port/ >/dev/null 2>&1
  local t0=$(awk '{print $14+$15}' /proc/$p/stat)
  local out=$(taskset -c 0 h2load $a -D $DUR --tls13-ciphers=TLS_AES_128_GCM_SHA256 https://127.0.0.1:$port/ 2>&1)
  local t1=$(awk '{print $14+$15}' /proc/$p/stat)
  kill $p; wait $p 2>/dev/null
  local rps=$(echo "$out" | sed -n 's/.*finished in .*, \([0-9.]*\) req\/s.*/\1/p')
  local ok=$(echo "$out" | sed -n 's/.*requests: .* \([0-9]*\) succeeded.*/\1/p')
  local cpu=$(echo "($t1-$t0)/100" | bc -l)
  printf "%s rps=%s cpu=%.2f per_core=%.0f ok=%s\n" $(basename $bin) $rps $cpu $(echo "$ok/$cpu" | bc -l) $ok
}
port=18950
for r in $(seq 1 $REPS); do for b in "$@"; do port=$((port+1)); run $b $port; done; done
kill $upid; rm -rf $d
