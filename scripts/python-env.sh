#!/usr/bin/env bash
# Creates .venv (once) and installs the pinned Python packages the demo app
# and the end-to-end tests need. Sourced by demo.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/tests/e2e/requirements.txt"
