#!/usr/bin/env bash
# What the protections cost on the 100-byte request path: instructions per
# proxied request (bench/instructions.sh, callgrind) with every table off,
# with the local ones on ([access] allow and deny lists, [rate_limit],
# [auth] basic with a bcrypt user, [compression] on but the 100-byte body
# under min_bytes), and with forward auth (one more request, to the same
# small app, per request).
#   bench/protect.sh        ~4 minutes; needs valgrind and htpasswd (apache2-utils)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v htpasswd >/dev/null || { echo "needs htpasswd (apt-get install apache2-utils)" >&2; exit 2; }
work=$(mktemp -d /tmp/tlsfront-protect.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Cost 10, htpasswd -B's default: paid once, then the success is remembered.
htpasswd -nbB bench secret >"$work/htpasswd"
cat >"$work/local.toml" <<CONF
[log]
access = "off"
level = "warn"
[access]
allow = ["127.0.0.0/8", "10.0.0.0/8"]
deny = ["192.0.2.0/24"]
[rate_limit]
requests = 100000000
per = "1s"
[auth]
basic = "$work/htpasswd"
CONF
cat >"$work/forward.toml" <<CONF
[log]
access = "off"
level = "warn"
[auth]
forward = "http://{upstream}/auth"
CONF

figures() {   # HTTP/1.1 and HTTP/2 instructions per request of one run
    "$@" | awk '$1 == "HTTP/1.1" || $1 == "HTTP/2" { printf "%s ", $2 }'
}
off=$(figures bench/instructions.sh)
basic="Basic $(printf 'bench:secret' | base64)"
local_on=$(REQCOUNT_AUTHORIZATION="$basic" CONFIG="$work/local.toml" figures bench/instructions.sh)
forward_on=$(CONFIG="$work/forward.toml" figures bench/instructions.sh)

echo "instructions per proxied request (callgrind; commit $(git rev-parse --short HEAD))"
printf '%-44s %10s %10s\n' configuration HTTP/1.1 HTTP/2
row() {
    read -r h1 h2 <<<"$2"
    read -r o1 o2 <<<"$off"
    printf '%-44s %10s %10s   (%+.1f %%, %+.1f %%)\n' "$1" "$h1" "$h2" \
        "$(echo "($h1 - $o1) * 100 / $o1" | bc -l)" "$(echo "($h2 - $o2) * 100 / $o2" | bc -l)"
}
row "protections off (bench/tlsfront.toml)" "$off"
row "access + rate_limit + basic auth + compression" "$local_on"
row "forward auth (one more request to the app)" "$forward_on"
