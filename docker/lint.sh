#!/usr/bin/env bash
# Lints the container setup without a Docker engine:
#   1. hadolint on docker/Dockerfile and docker/demo-app/Dockerfile
#   2. the compose files against the Compose Specification JSON schema
#   3. `docker-compose config -q` (Debian's docker-compose, v1) on them
#   4. docker/check_docker.py: what the image and compose setup promise
#   5. `tlsfront check` on docker/tlsfront.toml and `tlsfront health --help`,
#      when a built binary is at hand ($TLSFRONT_BIN, else the newest of
#      target/{release,debug}/tlsfront); skipped otherwise
# Installs its tools first, idempotently: the docker-compose Debian package
# (apt, only when missing) and the pinned docker/requirements-lint.txt into
# .venv. Prints every check; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== docker lint: tools"
if ! dpkg -s docker-compose >/dev/null 2>&1; then
  echo "installing Debian package docker-compose"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r docker/requirements-lint.txt
echo "hadolint $(.venv/bin/hadolint --version | awk '{print $NF}'), $(.venv/bin/check-jsonschema --version), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"

failed=()
run() { # run NAME COMMAND...: prints the command's output, records a failure
  local name="$1"
  shift
  echo "== $name"
  if "$@"; then
    echo "-- ok: $name"
  else
    echo "-- FAILED: $name"
    failed+=("$name")
  fi
}

compose_files=(docker/compose.yaml docker/compose.own-cert.yaml docker/compose.unix-socket.yaml docker/compose.production.yaml)

run "hadolint docker/Dockerfile docker/demo-app/Dockerfile" \
  .venv/bin/hadolint --no-color docker/Dockerfile docker/demo-app/Dockerfile
run "compose files against the Compose Specification schema" \
  .venv/bin/check-jsonschema --builtin-schema vendor.compose-spec "${compose_files[@]}"
# No .env, no inherited COMPOSE_* settings: the defaults in the files are checked.
compose_env=(env -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME -u SECRET_KEY -u TLSFRONT_USER -u TLSFRONT_CERTS)
run "docker-compose -f docker/compose.yaml config -q" \
  "${compose_env[@]}" docker-compose -f docker/compose.yaml config -q
run "docker-compose -f docker/compose.yaml -f docker/compose.own-cert.yaml config -q" \
  "${compose_env[@]}" docker-compose -f docker/compose.yaml -f docker/compose.own-cert.yaml config -q
run "docker-compose -f docker/compose.yaml -f docker/compose.unix-socket.yaml config -q" \
  "${compose_env[@]}" docker-compose -f docker/compose.yaml -f docker/compose.unix-socket.yaml config -q
run "docker-compose -f docker/compose.production.yaml config -q" \
  "${compose_env[@]}" docker-compose -f docker/compose.production.yaml config -q
run "docker/check_docker.py" .venv/bin/python docker/check_docker.py

bin="${TLSFRONT_BIN:-}"
if [ -z "$bin" ]; then
  for candidate in target/release/tlsfront target/debug/tlsfront; do
    if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then
      bin="$candidate"
    fi
  done
fi
if [ -n "$bin" ]; then
  check_config() {
    local out
    if out="$("$bin" check -c "$1" 2>&1)"; then
      head -n 1 <<<"$out"
    else
      echo "$out"
      return 1
    fi
  }
  run "$bin check -c docker/tlsfront.toml" check_config docker/tlsfront.toml
  run "$bin check -c docker/tlsfront.unix-socket.toml" check_config docker/tlsfront.unix-socket.toml
  run "$bin check -c docker/tlsfront.production.toml" check_config docker/tlsfront.production.toml
  run "$bin health --help (the image's HEALTHCHECK)" \
    bash -c '"$0" health --help >/dev/null' "$bin"
else
  echo "== tlsfront check: skipped (no built binary; set TLSFRONT_BIN or build first)"
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "docker lint: ${#failed[@]} failed: ${failed[*]}"
  exit 1
fi
echo "docker lint: all checks passed"
