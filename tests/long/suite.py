"""The long hostile-input and fault suite: runs the parts, prints each
part's `PART <name>: PASS|FAIL ...` line and a markdown summary table, and
exits 0 only if every part passed.

    python tests/long/suite.py                 # every part
    python tests/long/suite.py slowloris soak  # some parts
    python tests/long/suite.py --list

Normally started by tests/long/run.sh, which installs what it needs first.
Environment: TLSFRONT_BIN (the binary), LONG_SKIP (comma-separated parts to
skip), LONG_WORKDIR (where logs go; default tests/long/.work/run-*), and the
per-part sizes documented in tests/long/README.md.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import part_client_faults  # noqa: E402
import part_idle  # noqa: E402
import part_slowloris  # noqa: E402
import part_soak  # noqa: E402
import part_tls_posture  # noqa: E402
import part_upstream_faults  # noqa: E402
from common import Result, log, tlsfront_bin, workroot  # noqa: E402

PARTS = {
    "tls-posture": part_tls_posture.run,
    "upstream-faults": part_upstream_faults.run,
    "client-faults": part_client_faults.run,
    "slowloris": part_slowloris.run,
    "slowloris-h2": part_slowloris.run_h2,
    "idle": part_idle.run,
    "soak": part_soak.run,
}
ALIASES = {"tls": "tls-posture", "upstream": "upstream-faults", "client": "client-faults", "faults": None}


def resolve(args: list[str]) -> list[str]:
    if not args or args == ["all"]:
        names = list(PARTS)
    else:
        names = []
        for a in args:
            if a == "faults":
                names += ["client-faults", "upstream-faults"]
                continue
            a = ALIASES.get(a, a)
            if a not in PARTS:
                raise SystemExit(f"unknown part {a!r}; parts: {', '.join(PARTS)} (or all)")
            names.append(a)
    skip = {s.strip() for s in os.environ.get("LONG_SKIP", "").split(",") if s.strip()}
    return [n for n in PARTS if n in names and n not in skip]


def table(results: list[Result]) -> str:
    rows = ["| part | result | key numbers | time |", "|---|---|---|---|"]
    for r in results:
        numbers = r.summary.replace("|", "\\|")
        failed = [c[0] for c in r.checks if not c[1]]
        if failed:
            numbers += "<br>**failed:** " + "; ".join(failed).replace("|", "\\|")
        rows.append(f"| {r.name} | {'PASS' if r.passed else '**FAIL**'} | {numbers} | {r.seconds:.0f} s |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if "--list" in argv:
        print("\n".join(PARTS))
        return 0
    names = resolve(argv)
    log(f"tlsfront long suite: {', '.join(names)}")
    log(f"binary: {tlsfront_bin()}; logs: {workroot()}")
    results: list[Result] = []
    t_all = time.monotonic()
    for name in names:
        log(f"\n=== {name} ===")
        t = time.monotonic()
        try:
            r = PARTS[name]()
        except Exception as e:  # noqa: BLE001 - a crashed part is a failed part
            traceback.print_exc()
            r = Result(name, passed=False, summary=f"crashed: {type(e).__name__}: {e}")
        r.seconds = time.monotonic() - t
        results.append(r)
        log(r.line())
    total = time.monotonic() - t_all
    log(f"\n## tlsfront long suite: {sum(r.passed for r in results)}/{len(results)} parts passed "
        f"in {total / 60:.1f} min\n")
    log(table(results))
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        log("\nNotes (observations that do not decide PASS/FAIL):\n")
        for name, n in notes:
            log(f"- {name}: {n}")
    log(f"\nlogs: {workroot()}")
    log(f"{sum(r.passed for r in results)} passed, {sum(not r.passed for r in results)} failed")
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
