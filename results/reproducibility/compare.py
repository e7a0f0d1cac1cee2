"""How far the same trial (configuration and seed) moves with its company and its device.

Exercise 1's constant rate 0.3 over seeds 0–4, at the chapter's scale, trained five ways:
in exercise 1's own study (a pack of 35 trials on an H200: ../ex1-fixed-lr/ex1-fixed-lr.db),
in exercise 2's (a pack of 70 there, as its decay exponent 0: ../ex2-decay-exponent/),
as a pack of its own 5 trials on the same H200 (ex1-pack5-gpu.db, `gpu.sh cuda exercises`),
one trial at a time there (ex1-pack1-gpu.db: the same command with --pack 1 and
study.name=ex1-pack1), and as a pack of 5 on a 2-core CPU (ex1-pack5-cpu.db). Prints each
seed's final validation and test accuracy in each, and the validation differences from the
first; the largest move counts test accuracy too.

    .venv/bin/python results/reproducibility/compare.py > results/reproducibility/compare.txt

The CPU store was made with
    lrsweep run studies/ex1_fixed_lr.toml --device cpu --set study.name=ex1-pack5 \
        --set 'space.base_lr=[0.3]' --pack 5 --storage sqlite:///results/reproducibility/ex1-pack5-cpu.db
"""

from pathlib import Path

import optuna

from lrsweep.store.records import trial_curves

HERE = Path(__file__).resolve().parent
STORES = [  # (label, study name, file)
    ("H200, pack of 35", "ex1-fixed-lr", HERE.parent / "ex1-fixed-lr" / "ex1-fixed-lr.db"),
    ("H200, pack of 70", "ex2-decay-exponent",
     HERE.parent / "ex2-decay-exponent" / "ex2-decay-exponent.db"),
    ("H200, pack of 5", "ex1-pack5", HERE / "ex1-pack5-gpu.db"),
    ("H200, alone", "ex1-pack1", HERE / "ex1-pack1-gpu.db"),
    ("CPU, pack of 5", "ex1-pack5", HERE / "ex1-pack5-cpu.db"),
]
RATE = 0.3


def finals(name: str, path: Path) -> dict[int, tuple[float, float, int, str]]:
    """seed → (final val_acc, final test_acc, pack size, torch version) of the trials that
    trained at RATE every epoch (in exercise 2 two schedules do, identical: the first)."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{path}")
    torch_version = study.user_attrs["versions"]["torch"]
    found = {}
    for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        if set(trial_curves(t)["lr"]) == {RATE}:
            found.setdefault(t.user_attrs["seed"], (
                trial_curves(t)["val_acc"][-1], trial_curves(t)["test_acc"][-1],
                t.user_attrs["pack_size"], torch_version))
    return found


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = [(label, finals(name, path)) for label, name, path in STORES if path.is_file()]
    reference_label, reference = runs[0]
    for label, run in runs:
        versions = sorted({v[3] for v in run.values()})
        print(f"{label}: {len(run)} trials, torch {', '.join(versions)}")
    print(f"\nconstant η = {RATE}, final accuracy (validation / test) per seed; Δ against "
          f"{reference_label}")
    header = "seed" + "".join(f" | {label:^27}" for label, _ in runs)
    print(header)
    largest = {label: 0.0 for label, _ in runs[1:]}
    for seed in sorted(reference):
        cells = []
        for label, run in runs:
            if seed not in run:
                cells.append(f"{'—':^27}")
                continue
            val, test = run[seed][:2]
            if label == reference_label:
                cells.append(f"{val:.4f} / {test:.4f}".center(27))
            else:
                dv, dt = val - reference[seed][0], test - reference[seed][1]
                largest[label] = max(largest[label], abs(dv), abs(dt))
                cells.append(f"{val:.4f} / {test:.4f} ({dv:+.4f})".center(27))
        print(f"{seed:>4}" + "".join(f" | {c}" for c in cells))
    for label, value in largest.items():
        print(f"largest move, {label} against {reference_label}: {value:.4f}")


if __name__ == "__main__":
    main()
