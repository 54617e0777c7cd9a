#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/kubernetes without a cluster
# (the Kubernetes step of ./scripts/test.sh; alone: bash deploy/kubernetes/validate.sh).
#   1. renders the base and both overlays with `kubectl kustomize` when a
#      kubectl with kustomize v4 or newer is at hand, and with validate.py's
#      own renderer (the two must agree);
#   2. validates every object with kubernetes-validate (strict) against
#      Kubernetes 1.28 and 1.37, cert-manager's Certificate against
#      validate.py's schema;
#   3. the project's checks (drain timing against tlsfront.toml, probes,
#      non-root, the admin port kept private, ...), `tlsfront check` on each
#      tlsfront.toml when a built binary is at hand, and negative controls.
# Installs its tools first, idempotently: the pinned
# deploy/kubernetes/requirements.txt into .venv, and kubectl when missing and
# Debian offers one recent enough (see below). Nothing here talks to a
# cluster: the manifests are validated, not run.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "== kubernetes: tools"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r deploy/kubernetes/requirements.txt

# kubectl: the machine's own if there is one. Otherwise Debian's
# kubernetes-client, but only from 1.21 on: the one in Debian 12 (bookworm),
# 1.20.x, embeds kustomize v2.0.3, which cannot read these kustomization
# files (`patches:` with a path, directories in `resources:`); then
# validate.py renders them itself and says so.
if ! command -v kubectl >/dev/null 2>&1; then
  candidate="$(apt-cache policy kubernetes-client 2>/dev/null | awk '/Candidate:/ {print $2}')"
  upstream="${candidate#*really}"
  minor="$(sed -n 's/^1\.\([0-9][0-9]*\)\..*/\1/p' <<<"$upstream")"
  if [ -n "$minor" ] && [ "$minor" -ge 21 ]; then
    echo "installing Debian package kubernetes-client $candidate"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
  else
    echo "no kubectl; Debian's kubernetes-client is ${candidate:-not available} (kustomize too old below 1.21): not installed"
  fi
fi

.venv/bin/python deploy/kubernetes/validate.py
