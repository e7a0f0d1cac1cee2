#!/usr/bin/env bash
# Does a study's precision change its answers, and what does it save? studies/chapter.toml (the
# chapter's nine runs × five seeds, at its scale) trained at each precision into a store of its
# own, FOLDER/chapter-P.db, timed from process start to exit; then precision-compare.py: each
# run's 5-seed interval at the first precision, the others' paired differences from it.
#   bash results/benchmarks/precision.sh DEVICE FOLDER [PRECISION ...] [-- lrsweep run options]
# Precisions by default: fp32 and bf16 on a CPU (tf32 computes FP32 there), fp32, tf32 and bf16
# on CUDA. A store already in FOLDER is continued where it stopped (`lrsweep run` resumes it):
# its time is then this invocation's part only, and the record says so. The record goes to
# FOLDER/precision.txt. Checkpoints and weights go to a temporary folder, and are lost with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
device=${1:?usage: precision.sh DEVICE FOLDER [PRECISION ...] [-- lrsweep run options]}
folder=${2:?usage: precision.sh DEVICE FOLDER [PRECISION ...] [-- lrsweep run options]}
shift 2
precisions=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do precisions+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
if [ ${#precisions[@]} -eq 0 ]; then
  if [ "$device" = cpu ]; then precisions=(fp32 bf16); else precisions=(fp32 tf32 bf16); fi
fi
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LRSWEEP_CHECKPOINTS="$work/checkpoints" LRSWEEP_ARTIFACTS="$work/artifacts"
mkdir -p "$folder"
stores=() seconds=() notes=()
for p in "${precisions[@]}"; do
  store="$folder/chapter-$p.db"
  [ -e "$store" ] && notes+=("$p: continued an existing store; its time is this run's part only")
  start=$(date +%s.%N)
  "$PYTHON" -m lrsweep run studies/chapter.toml --device "$device" "$@" \
    --set "study.name=chapter-$p" --set "train.precision=$p" --storage "sqlite:///$store" \
    > "$work/chapter-$p.log" 2>&1 || { tail -n 5 "$work/chapter-$p.log" >&2; exit 1; }
  seconds+=("$p=$("$PYTHON" -c "print($(date +%s.%N) - $start)")")
  stores+=("$p=sqlite:///$store")
done
{ echo "lrsweep run studies/chapter.toml --device $device $* --set train.precision=P" \
       "(P: ${precisions[*]})"
  "$PYTHON" -c "from lrsweep.train import device as d; print(d.describe_device(d.resolve_device('$device')))"
  for note in "${notes[@]}"; do echo "$note"; done
  "$PYTHON" results/benchmarks/precision-compare.py "${stores[@]}" --seconds "${seconds[@]}"
} | tee "$folder/precision.txt"
