#!/usr/bin/env bash
# Every test of the project, from a fresh clone: installs what the tests
# need (pinned Python packages into .venv), checks formatting and lints,
# runs the Rust unit and integration tests and the end-to-end suites with
# real apps behind the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== python packages (pinned, into .venv)"
bash scripts/python-env.sh

echo "== Chromium for the real-browser tests (Debian package)"
command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null)

echo "== openssl s_client for the TLS version tests (Debian package)"
command -v openssl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null)

echo "== htpasswd -B for the basic-auth tests (Debian package apache2-utils)"
command -v htpasswd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apache2-utils >/dev/null)

echo "== pebble and pebble-challtestsrv, Let's Encrypt's test CA, for the ACME tests (Debian package)"
command -v pebble-challtestsrv >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pebble >/dev/null)

echo "== cargo fmt --check (the crate, and the fuzz/ workspace)"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check

echo "== cargo clippy -D warnings (the crate, and the fuzz/ workspace)"
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --quiet -- -D warnings

echo "== cargo test (unit + integration, real sockets and TLS)"
cargo build --quiet
if cargo nextest --version >/dev/null 2>&1; then
  # Each test in its own process; .config/nextest.toml kills a test still
  # running after 3 minutes and fails it by name.
  cargo nextest run --no-fail-fast
  cargo test --quiet --doc
else
  echo "cargo-nextest not installed: cargo test, with no per-test timeout (cargo install cargo-nextest --locked)"
  timeout 30m cargo test --quiet
fi

echo "== fuzz smoke: every cargo-fuzz target for 10 s, replaying the committed regressions"
# Seeded, so that a failure here can be reproduced; explore unseeded and longer
# with fuzz/smoke.sh 60 (see fuzz/README.md).
# Every core: in the test command nothing else needs the machine meanwhile.
FUZZ_SEED=1 CARGO_BUILD_JOBS="$(nproc)" bash fuzz/smoke.sh 10

echo "== docker: Dockerfile and compose lint (no Docker engine needed)"
bash docker/lint.sh

echo "== kubernetes: deploy/kubernetes rendered (kubectl kustomize) and validated (kubernetes-validate); no cluster, not run"
bash deploy/kubernetes/validate.sh

echo "== npm packages of the Express sample app (pinned by package-lock.json)"
npm ci --prefix tests/apps/express_app --no-audit --no-fund --loglevel=error

echo "== end-to-end: real apps (Flask, Django, Express) behind tlsfront and doctor"
# pytest-timeout (pinned in tests/e2e/requirements.txt) fails a test that
# runs longer than 2 minutes, with its name.
TLSFRONT_BIN="$PWD/target/debug/tlsfront" .venv/bin/python -m pytest tests/e2e bench/test_bench.py -q --timeout 120

echo "== HAProxy for the fleet test (Debian package)"
command -v haproxy >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null)

echo "== fleet: three tlsfront behind HAProxy (PROXY v2, /readyz checks), one pebble, rolling restarts under load"
# About 2.5 minutes on 2 cores (docs/testing.md, "The fleet test"); each part
# fails by name after 10 minutes (pytest-timeout). Numbers and logs in
# tests/fleet/.work/ (results.json).
TLSFRONT_BIN="$PWD/target/debug/tlsfront" .venv/bin/python -m pytest tests/fleet -q --timeout 600

# ---- Docker, with a real engine (docker/test.sh) --------------------------------
# Starts dockerd when none answers (and stops it again), builds stand-in base
# images when no registry can be reached, builds docker/Dockerfile and runs the
# compose demo end to end on 127.0.0.1 ports. See docker/README.md.
echo "== docker: the image built and the compose demo run end to end (docker/test.sh)"
bash docker/test.sh
# ---- end of Docker ---------------------------------------------------------------
