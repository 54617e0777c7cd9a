#!/usr/bin/env bash
# The long hostile-input and fault suite of tlsfront, in one command:
#
#   tests/long/run.sh                      # every part (about 15 minutes on 2 cores)
#   tests/long/run.sh slowloris            # one part (see --list)
#   SOAK_SECONDS=60 tests/long/run.sh soak # a short soak
#
# Installs what it needs: Debian packages (sslscan, nghttp2-client for
# h2load, openssl), the pinned Python packages (tests/e2e/requirements.txt
# and tests/long/requirements.txt into .venv), and builds the release binary
# with `cargo build --release` -- unless TLSFRONT_BIN names a binary to use.
# Everything runs on 127.0.0.1 and every load is bounded in count and time.
# Logs of each run: tests/long/.work/run-*/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

# 1. System tools.
missing=()
command -v sslscan >/dev/null 2>&1 || missing+=(sslscan)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Pinned Python packages in .venv.
bash "$root/scripts/python-env.sh"
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/tests/long/requirements.txt"

# 3. The binary.
if [ -z "${TLSFRONT_BIN:-}" ]; then
  cargo build --release --quiet
  export TLSFRONT_BIN="$root/target/release/tlsfront"
fi

# 4. Room for 10,000+ connections on the client side (tlsfront raises its own limit).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Keep the last few runs' logs.
if [ -d "$root/tests/long/.work" ]; then
  ls -1dt "$root"/tests/long/.work/run-* 2>/dev/null | tail -n +5 | xargs -r rm -rf
fi

exec "$root/.venv/bin/python" -u "$root/tests/long/suite.py" "$@"
