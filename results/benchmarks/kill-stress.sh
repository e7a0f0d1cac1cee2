#!/usr/bin/env bash
# kill -9 the quickstart study at random moments until a run finishes, then compare every
# configuration's trial with an uninterrupted run of the same study. Usage: bash results/benchmarks/kill-stress.sh
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
import json, pathlib, sys, optuna
from lrsweep.store.records import trial_curves
tmp, kills = pathlib.Path(sys.argv[1]), sys.argv[2]
def load(db):
    """Each trial by its configuration (its grid point): a trial killed after it was made but
    before it took a point gets a later one, so numbers may map to other points than in an
    uninterrupted run, while every point still runs once with the same curves."""
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp / db}")
    return {json.dumps(t.params, sort_keys=True): (t.number, t.state.name, t.value,
            [trial_curves(t)[k] for k in ("lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                        "test_acc")]) for t in study.trials}
killed, ref = load("killed.db"), load("ref.db")
states = sorted({s for _, s, *_ in killed.values()})
same = killed.keys() == ref.keys() and all(killed[p][1:] == ref[p][1:] for p in ref)
renumbered = sum(killed[p][0] != ref[p][0] for p in ref if p in killed)
left = list((tmp / "killed.db.checkpoints").rglob("*.pt"))
print(f"{kills} kill -9 at random moments; {len(killed)} trials, states {states}; every "
      f"configuration's curves equal to the uninterrupted run: {same} ({renumbered} with "
      f"another trial number); checkpoints left: {len(left)}")
for point in sorted(set(killed) | set(ref)):
    if killed.get(point, [None])[1:] != ref.get(point, [None])[1:]:
        print(f"  {point} differs: killed {killed.get(point, [None])[:3]}, "
              f"uninterrupted {ref.get(point, [None])[:3]}")
PY
rm -rf "$tmp"
