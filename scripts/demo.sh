#!/usr/bin/env bash
# tlsfront in front of the Flask + Flask-Login demo app:
#   https://localhost:8443  (log in as alice / wonderland)
# The development CA is certs/ca.pem (see README: "Trust the development CA").
# Ctrl-C stops both. Override with LISTEN=127.0.0.1:9443 APP_PORT=5000.
set -euo pipefail
cd "$(dirname "$0")/.."
listen="${LISTEN:-127.0.0.1:8443}"
app_port="${APP_PORT:-8000}"

bash scripts/python-env.sh
cargo build --release --quiet

HOST=127.0.0.1 PORT="$app_port" .venv/bin/python docker/demo-app/app.py &
app_pid=$!
trap 'kill "$app_pid" 2>/dev/null || true' EXIT INT TERM
echo "demo app on http://127.0.0.1:$app_port (only reachable through tlsfront from outside)"
echo "open https://localhost:${listen##*:}/  and log in as alice / wonderland"
./target/release/tlsfront run --listen "$listen" --upstream "http://127.0.0.1:$app_port"
