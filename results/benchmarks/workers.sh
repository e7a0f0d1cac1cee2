#!/usr/bin/env bash
# Throughput of 1, 2, 3 workers on one study through PostgreSQL: the quickstart study
# (12 trials × 8 epochs) under a fresh name each time; prints wall seconds and trial-epochs/s.
# Usage: [WORKERS="1 2 3"] [OMP_NUM_THREADS=N] bash results/benchmarks/workers.sh [postgresql://localhost/test]
set -euo pipefail
cd "$(dirname "$0")/../.."
url=${1:-postgresql://localhost/test}
tmp=$(mktemp -d)
export LRSWEEP_STORAGE=$url LRSWEEP_CHECKPOINTS=$tmp/checkpoints LRSWEEP_ARTIFACTS=$tmp/artifacts
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc --all) cores; store: $url; threads per worker: ${OMP_NUM_THREADS:-all cores}"
for n in ${WORKERS:-1 2 3}; do
  name="workers-bench-$n-$$"
  sed "s/^name = \"quickstart\"/name = \"$name\"/" studies/quickstart.toml > "$tmp/$name.toml"
  start=$(date +%s.%N)
  pids=()
  for i in $(seq 1 "$n"); do  # all at once, as the README's recipe starts them
    .venv/bin/lrsweep run "$tmp/$name.toml" > "$tmp/$name-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 1 "$n"); do
    if ! wait "${pids[$((i - 1))]}"; then
      echo "worker $i of $n failed:" >&2; tail -n 5 "$tmp/$name-$i.log" >&2; exit 1
    fi
  done
  end=$(date +%s.%N)
  trained=$(for i in $(seq 1 "$n"); do grep -c " complete val_acc" "$tmp/$name-$i.log" || true; done | paste -sd+)
  .venv/bin/python - "$name" "$url" "$start" "$end" "$n" "$trained" <<'PY'
import sys, optuna
from lrsweep.store.records import trial_curves
name, url, start, end, n, trained = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
study = optuna.load_study(study_name=name, storage=url)
done = [t for t in study.trials if t.state.name == "COMPLETE"]
epochs = sum(len(trial_curves(t)["lr"]) for t in done)
print(f"{n} worker(s): {len(done)} trials (per worker: {trained}), {epochs} trial-epochs in "
      f"{end - start:.1f} s = {epochs / (end - start):.2f} trial-epochs/s")
optuna.delete_study(study_name=name, storage=url)
PY
done
rm -rf "$tmp"
