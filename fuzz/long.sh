#!/usr/bin/env bash
# The long fuzz run: every target for 10 minutes or 10^7 runs, whichever
# comes first, with the corpora kept between runs in a cache directory
# (FUZZ_WORK, default ~/.cache/tlsfront-fuzz), so each run starts where the
# last one stopped. Not in the test command (about 70 minutes); run it on
# the final code of every change to a parser or a header policy (see
# fuzz/README.md, "The long run") and record its table there.
#
#   bash fuzz/long.sh                 # every target
#   TARGETS=prefix bash fuzz/long.sh  # one
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export FUZZ_WORK="${FUZZ_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/tlsfront-fuzz}"
export FUZZ_RUNS="${FUZZ_RUNS:-10000000}"
mkdir -p "$FUZZ_WORK"
echo "== corpora kept in $FUZZ_WORK"
exec bash "$here/smoke.sh" "${LONG_SECONDS:-600}"
