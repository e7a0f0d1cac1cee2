#!/usr/bin/env bash
# The joint search (studies/joint.toml: TPE, median pruning) run by this tree's code (slotted
# packs, lockstep pruning after each trial's warmup) and, with BEFORE=DIR (a folder holding an
# earlier commit's lrsweep/ package: `git archive COMMIT lrsweep | tar -x -C DIR`), by that code
# too; then each study's best configuration over 5 fresh seeds (`lrsweep rerun --top 1 --seeds
# 5`, trained by this tree's code for both), and both stores summarised by joint-compare.py.
#   [BEFORE=DIR] bash results/benchmarks/joint-compare.sh OUT_DIR DEVICE [--set KEY=VALUE ...]
# OUT_DIR receives joint-before.db, joint-slots.db and joint-compare.txt (the record).
# PYTHON (default .venv/bin/python, else python3) must import lrsweep's requirements.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1 device=$2
shift 2
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LRSWEEP_CHECKPOINTS="$work/checkpoints" LRSWEEP_ARTIFACTS="$work/artifacts"
log="$out/joint-compare.txt"
{ echo "# bash results/benchmarks/joint-compare.sh OUT $device $*  (BEFORE=${BEFORE:-none})"
  "$PYTHON" -c "from lrsweep.train import device as d; print('#', d.describe_device(d.resolve_device('$device')))"
} | tee "$log"
stores=()
for which in ${BEFORE:+before} slots; do
  db="$out/joint-$which.db" code=${PYTHONPATH:-} isolate=()
  # -P: the working directory (this tree) is not put first on the path, so BEFORE's package
  # is the one imported (an editable install of this tree comes after PYTHONPATH).
  [ "$which" = before ] && code="$BEFORE${PYTHONPATH:+:$PYTHONPATH}" isolate=(-P)
  PYTHONPATH=$code "$PYTHON" "${isolate[@]}" -c "import lrsweep; print('#', '$which code:', lrsweep.__file__)" | tee -a "$log"
  start=$(date +%s.%N)
  PYTHONPATH=$code "$PYTHON" "${isolate[@]}" -m lrsweep run studies/joint.toml --device "$device" \
    "$@" --storage "sqlite:///$db" > "$work/joint-$which.log" 2>&1
  { grep '^study ' "$work/joint-$which.log" | tail -n 1
    "$PYTHON" -c "print(f'$which search: {$(date +%s.%N) - $start:.1f} s, process start to exit')"
  } | tee -a "$log"
  path="$work/joint_best_$which.toml"
  "$PYTHON" -m lrsweep rerun joint --top 1 --seeds 5 --storage "sqlite:///$db" --out "$path" \
    > /dev/null
  start=$(date +%s.%N)
  "$PYTHON" -m lrsweep run "$path" --device "$device" --storage "sqlite:///$db" \
    > "$work/joint-best-$which.log" 2>&1
  "$PYTHON" -c "print(f'$which re-run: {$(date +%s.%N) - $start:.1f} s')" | tee -a "$log"
  stores+=("$which=$db")
done
"$PYTHON" results/benchmarks/joint-compare.py "${stores[@]}" | tee -a "$log"
