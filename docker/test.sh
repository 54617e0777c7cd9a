#!/usr/bin/env bash
# The Docker part of the test command (scripts/test.sh runs it), with a real
# Docker engine:
#   1. an engine: the one that answers, or else Debian's docker.io (and
#      docker-compose, debootstrap) installed with apt-get and a dockerd
#      started here, stopped again when this script ends, also on failure;
#   2. the base images the Dockerfiles name, or local stand-ins built from
#      Debian packages when no registry can be reached
#      (docker/offline-base-images.sh);
#   3. the image built from docker/Dockerfile (timed), then
#      `pytest tests/docker`: the image's promises and the compose demo end
#      to end, through ports published on 127.0.0.1 only.
# Uses .venv (scripts/python-env.sh). Prints the dockerd log on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
started_at=$SECONDS
# The classic builder everywhere (Debian's engine has no buildx; docker-compose
# v1 builds through the engine API, which shares this builder's cache).
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

# One Docker test at a time on this machine: a second run would use (and the
# first one then stop) the same engine.
exec 9>/tmp/tlsfront-docker-test.lock
if ! flock -w 900 9; then
  echo "docker test: another run still holds /tmp/tlsfront-docker-test.lock after 15 min" >&2
  exit 1
fi

work="$(mktemp -d /tmp/tlsfront-docker.XXXXXX)"
dockerd_pid=""
dockerd_log="$work/dockerd.log"

cleanup() {
  local status=$?
  if [ -n "$dockerd_pid" ]; then
    if [ "$status" -ne 0 ]; then
      echo "== docker test failed: last lines of the dockerd log ($dockerd_log)"
      tail -n 60 "$dockerd_log" || true
    fi
    echo "== stopping the dockerd this script started (pid $dockerd_pid)"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    # dockerd stops its containers (10 s each at most) and its containerd.
    for _ in $(seq 1 60); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "dockerd still running after 30 s: SIGKILL"
      kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
  fi
  # The dockerd log stays for a failure report; everything else goes.
  if [ "$status" -ne 0 ] && [ -n "$dockerd_pid" ]; then
    mkdir -p /tmp/tlsfront-docker-logs
    cp "$dockerd_log" "/tmp/tlsfront-docker-logs/dockerd-$(date +%Y%m%dT%H%M%S).log" 2>/dev/null || true
    echo "dockerd log kept in /tmp/tlsfront-docker-logs/"
  fi
  # Nothing debootstrap mounted may be left below $work when it goes.
  for m in $(findmnt -n -l -o TARGET | grep -F "$work/" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

engine_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

echo "== docker: engine"
if command -v docker >/dev/null && engine_answers; then
  echo "using the Docker engine that answers: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
else
  packages=(docker.io docker-compose debootstrap)
  missing=()
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Data root: Docker's usual place, so that images and the build cache (the
  # compiled dependency layer) are kept for the next run.
  echo "starting dockerd (data root /var/lib/docker, log $dockerd_log)"
  /usr/sbin/dockerd --data-root /var/lib/docker --host unix:///var/run/docker.sock \
    >"$dockerd_log" 2>&1 9>&- &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    engine_answers && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "dockerd exited at start"
      exit 1
    fi
    sleep 0.5
  done
  engine_answers || { echo "dockerd does not answer after 30 s"; exit 1; }
  echo "dockerd $(docker version --format '{{.Server.Version}}') answers (pid $dockerd_pid)"
fi
command -v docker-compose >/dev/null || {
  echo "docker-compose (v1) is needed: apt-get install docker-compose"
  exit 1
}

echo "== docker: test tools (.venv, the host binary whose error lines the container must match)"
bash scripts/python-env.sh
cargo build --quiet
export TLSFRONT_BIN="$PWD/target/debug/tlsfront"

echo "== docker: base images"
DEBOOTSTRAP_DIR_PARENT="$work" bash docker/offline-base-images.sh

echo "== docker: build docker/Dockerfile (classic builder)"
build_started=$SECONDS
if ! docker build -f docker/Dockerfile -t tlsfront:local . >"$work/build.log" 2>&1; then
  tail -n 80 "$work/build.log"
  exit 1
fi
echo "built tlsfront:local in $((SECONDS - build_started)) s"

echo "== docker: pytest tests/docker (the image, then the compose demo end to end)"
.venv/bin/python -m pytest tests/docker -q -p no:cacheprovider --tb=short -s

echo "== docker: done in $((SECONDS - started_at)) s"
