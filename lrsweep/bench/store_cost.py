"""What storing a trial costs: milliseconds per trial to ask, record its curves and tell, on a
fresh SQLite file, by lrsweep's batched write and by Optuna's per-value API."""

from __future__ import annotations

import tempfile
import time
from typing import Any


def storage_cost(trials: int = 100, epochs: int = 30) -> dict[str, Any]:
    """Milliseconds per trial to ask, record (curves, attrs, intermediate values) and tell, on
    a fresh SQLite file: lrsweep's batched write against one Optuna call per value."""
    import optuna

    from lrsweep.store.records import record_trial
    from lrsweep.store.storage import open_storage

    curve = [0.5 + i / 1000 for i in range(epochs)]
    attrs = {name: curve for name in ("lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                      "test_acc", "epoch_seconds")}
    attrs.update(seed=0, diverged=None, status="complete", device="bench", pack_size=1,
                 schedule={"name": "constant", "base_lr": 0.1})
    timings = {}
    with tempfile.TemporaryDirectory() as folder:
        rdb = open_storage(f"sqlite:///{folder}/bench.db")
        for mode in ("batched", "per_value"):
            study = optuna.create_study(storage=rdb, study_name=mode,
                                        sampler=optuna.samplers.RandomSampler(seed=0))
            start = time.perf_counter()
            for _ in range(trials):
                trial = study.ask()
                trial.suggest_float("base_lr", 0.01, 1.0, log=True)
                if mode == "batched":
                    record_trial(study, trial, attrs, dict(enumerate(curve)))
                else:
                    for key, value in attrs.items():
                        trial.set_user_attr(key, value)
                    for step, value in enumerate(curve):
                        trial.report(value, step)
                study.tell(trial, curve[-1])
            timings[f"{mode}_ms_per_trial"] = (time.perf_counter() - start) / trials * 1e3
    return {"trials": trials, "epochs": epochs, "backend": "sqlite (WAL)", **timings}
