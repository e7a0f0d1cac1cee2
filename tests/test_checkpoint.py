"""Pack checkpoints: round trip, atomic replacement, damaged files, where they live."""

from __future__ import annotations

import optuna
import torch

from lrsweep.checkpoint import Checkpoints, pack_name
from lrsweep.engine import EpochMetrics, Resume
from lrsweep.model import lenet


def state(seed: int, epochs: int) -> Resume:
    # Every field finite: NaN != NaN would make equal curves compare unequal.
    metrics = [EpochMetrics(e, 0.1, 2.0 - e, 0.5, 1.0, 0.6, 0.6, 1.5, 0.9, 0.05, 0.61, 0.8,
                            0.02, e) for e in range(epochs)]
    return Resume(lenet(seed).state_dict(), metrics)


def test_round_trip_keeps_weights_curves_and_status(tmp_path):
    ckpts = Checkpoints(tmp_path)
    states = {7: state(0, 2), 8: Resume(lenet(1).state_dict(), [], "pruned", None)}
    ckpts.save("my study/1", "pack-7", states)
    back = ckpts.load("my study/1", "pack-7")
    assert back.keys() == {7, 8}
    assert back[7].epochs == states[7].epochs and back[8].status == "pruned"
    assert all(torch.equal(back[7].state_dict[k], v) for k, v in states[7].state_dict.items())
    assert ckpts.path("my study/1", "pack-7").parent.name == "my_study_1"  # a safe folder name


def test_a_new_save_replaces_the_old_whole_and_leaves_no_temporary_file(tmp_path):
    ckpts = Checkpoints(tmp_path)
    ckpts.save("s", "pack-1", {1: state(0, 1)})
    ckpts.save("s", "pack-1", {1: state(0, 2)})
    assert len(ckpts.load("s", "pack-1")[1].epochs) == 2
    assert [p.name for p in ckpts.path("s", "pack-1").parent.iterdir()] == ["pack-1.pt"]


def test_missing_or_damaged_checkpoints_mean_start_over(tmp_path):
    ckpts = Checkpoints(tmp_path)
    assert ckpts.load("s", "pack-1") == {}
    ckpts.save("s", "pack-1", {1: state(0, 1)})
    path = ckpts.path("s", "pack-1")
    path.write_bytes(path.read_bytes()[:100])
    assert ckpts.load("s", "pack-1") == {}
    ckpts.remove("s", "pack-1")
    ckpts.remove("s", "pack-1")  # removing twice is fine
    assert not path.exists()


def test_folder_beside_a_sqlite_file_or_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("LRSWEEP_CHECKPOINTS", raising=False)
    assert Checkpoints.for_storage("sqlite:///results/x.db").folder.as_posix() == \
        "results/x.db.checkpoints"
    assert Checkpoints.for_storage("postgresql://h/db").folder.as_posix() == "results/checkpoints"
    monkeypatch.setenv("LRSWEEP_CHECKPOINTS", str(tmp_path))
    assert Checkpoints.for_storage("postgresql://h/db").folder == tmp_path


def test_an_sgld_trials_sampler_state_round_trips(tmp_path):
    ckpts = Checkpoints(tmp_path)
    sampler = {"noise": torch.Generator().manual_seed(3).get_state(),
               "total": torch.rand(5, 10, dtype=torch.float64), "count": 2, "opportunities": 4}
    ckpts.save("s", "pack-1", {1: Resume(lenet(0).state_dict(), [], sampler=sampler)})
    back = ckpts.load("s", "pack-1")[1].sampler
    assert torch.equal(back["noise"], sampler["noise"])
    assert torch.equal(back["total"], sampler["total"])
    assert (back["count"], back["opportunities"]) == (2, 4)


def test_a_pack_is_named_by_its_first_trial_and_the_instant_the_store_made_it(tmp_path):
    # Two stores (or a store made anew) hand out the same trial ids: the names must differ.
    names = set()
    for store in ("a.db", "b.db"):
        study = optuna.create_study(storage=f"sqlite:///{tmp_path / store}", study_name="s")
        first = study._storage.get_trial(study.ask()._trial_id)
        assert first._trial_id == 1
        names.add(pack_name(first))
    assert len(names) == 2 and all(n.startswith("pack-1-") for n in names)
    again = optuna.load_study(storage=f"sqlite:///{tmp_path / 'b.db'}", study_name="s")
    assert pack_name(again.trials[0]) in names  # another worker finds the same name
