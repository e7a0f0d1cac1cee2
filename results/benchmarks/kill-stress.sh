#!/usr/bin/env bash
# kill -9 the quickstart study at random moments until a run finishes, then compare every
# trial with an uninterrupted run of the same study. Usage: bash results/benchmarks/kill-stress.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
export LRSWEEP_GRACE_SECONDS=2 LRSWEEP_HEARTBEAT_SECONDS=0.5
.venv/bin/lrsweep run studies/quickstart.toml --storage "sqlite:///$tmp/ref.db" > /dev/null 2>&1
kills=0
while true; do
  .venv/bin/lrsweep run studies/quickstart.toml --storage "sqlite:///$tmp/killed.db" > /dev/null 2>&1 &
  pid=$!
  sleep "$(python3 -c 'import random; print(round(random.uniform(1.0, 9.0), 2))')"
  if kill -9 "$pid" 2>/dev/null; then
    kills=$((kills + 1)); wait "$pid" 2>/dev/null; sleep 2.6   # let the leases expire
  else
    wait "$pid"; break
  fi
done
.venv/bin/python - "$tmp" "$kills" <<'PY'
import pathlib, sys, optuna
tmp, kills = pathlib.Path(sys.argv[1]), sys.argv[2]
def load(db):
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp / db}")
    return {t.number: (t.state.name, t.value, [t.user_attrs[k] for k in
            ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc")]) for t in study.trials}
killed, ref = load("killed.db"), load("ref.db")
states = sorted({s for s, _, _ in killed.values()})
left = list((tmp / "killed.db.checkpoints").rglob("*.pt"))
print(f"{kills} kill -9 at random moments; {len(killed)} trials, states {states}; "
      f"every curve equal to the uninterrupted run: {killed == ref}; checkpoints left: {len(left)}")
PY
rm -rf "$tmp"
