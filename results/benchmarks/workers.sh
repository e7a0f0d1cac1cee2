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
  .venv/bin/lrsweep run "$tmp/$name.toml" > "$tmp/$name-0.log" 2>&1 &
  sleep 3   # the first worker creates the study; the others join it by name
  for i in $(seq 2 "$n"); do .venv/bin/lrsweep worker "$name" > "$tmp/$name-$i.log" 2>&1 & done
  wait
  end=$(date +%s.%N)
  .venv/bin/python - "$name" "$url" "$start" "$end" "$n" <<'PY'
import sys, optuna
name, url, start, end, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
study = optuna.load_study(study_name=name, storage=url)
done = [t for t in study.trials if t.state.name == "COMPLETE"]
epochs = sum(len(t.user_attrs["lr"]) for t in done)
print(f"{n} worker(s): {len(done)} trials, {epochs} trial-epochs in {end - start:.1f} s "
      f"= {epochs / (end - start):.2f} trial-epochs/s")
optuna.delete_study(study_name=name, storage=url)
PY
done
rm -rf "$tmp"
