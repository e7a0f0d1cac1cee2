#!/usr/bin/env bash
# `lrsweep bench` by an earlier commit's code and by this tree's, alternating, in one run on one
# machine: what a change did to the engine's speed, with the machine's own drift between runs
# shown by the repeats. BEFORE is a folder holding the earlier commit's lrsweep/ package
# (`git archive COMMIT lrsweep | tar -x -C DIR`).
#   BEFORE=DIR bash results/benchmarks/bench-before-after.sh OUT.txt [ROUNDS] [bench options]
# Each round runs before, then after; OUT.txt gets every table, and a summary of each row's
# trial-epochs per second by code (median over the rounds). PYTHON as in gpu.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${BEFORE:?set BEFORE=DIR, a folder holding the lrsweep/ package of an earlier commit}"
out=$1 rounds=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "# BEFORE=$BEFORE bash results/benchmarks/bench-before-after.sh OUT $rounds $*" | tee "$out"
for round in $(seq "$rounds"); do
  for which in before after; do
    code=${PYTHONPATH:-} isolate=()
    # -P: this tree is not put first on the path, so BEFORE's package is the one imported.
    [ "$which" = before ] && code="$BEFORE${PYTHONPATH:+:$PYTHONPATH}" isolate=(-P)
    echo "## round $round, $which" | tee -a "$out"
    PYTHONPATH=$code "$PYTHON" "${isolate[@]}" -m lrsweep bench "$@" \
      --out "$work/$which-$round.json" 2>/dev/null | tee -a "$out"
  done
done
"$PYTHON" - "$work" "$rounds" <<'EOF' | tee -a "$out"
import json, statistics, sys
from pathlib import Path
work, rounds = Path(sys.argv[1]), int(sys.argv[2])
rates, names = {}, {}
for which in ("before", "after"):
    for r in range(1, rounds + 1):
        for row in json.loads((work / f"{which}-{r}.json").read_text())["rows"]:
            # A configuration by what it runs, not by its name, which changed over time.
            key = (row["name"] if not row["name"].startswith("lrsweep") else
                   (row["pack"], "own orders" in row["name"]))
            names[key] = row["name"]  # the newer code's name
            rates.setdefault(key, {}).setdefault(which, []).append(
                row["trial_epochs_per_second"])
print("\ntrial-epochs per second, median over rounds (each round's in brackets)")
print(f"{'configuration':<40}{'before':>24}{'after':>24}{'after/before':>14}")
for key, by in rates.items():
    cells = [f"{statistics.median(v):.2f} [{', '.join(f'{x:.2f}' for x in v)}]" if v else "–"
             for v in (by.get("before"), by.get("after"))]
    ratio = (f"{statistics.median(by['after']) / statistics.median(by['before']):>13.2f}×"
             if len(by) == 2 else f"{'–':>14}")
    print(f"{names[key]:<40}{cells[0]:>24}{cells[1]:>24}{ratio}")
EOF
