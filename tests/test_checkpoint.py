"""Pack checkpoints: round trip, atomic replacement, damaged files, where they live."""

from __future__ import annotations

import time

import optuna
import pytest
import torch

from lrsweep.search.takeover import checkpoints_for, pack_name
from lrsweep.train.checkpoint import BackgroundWriter, Checkpoints, DamagedCheckpoint
from lrsweep.train.trials import EpochMetrics, PackState, Resume
from lrsweep.train.model import LoopedPack, PackedLeNet, lenet


def curve(epochs: int) -> list[EpochMetrics]:
    # Every field finite: NaN != NaN would make equal curves compare unequal.
    return [EpochMetrics(e, 0.1, 2.0 - e, 0.5, 1.0, 0.6, 0.6, 1.5, 0.9, 0.05, 0.61, 0.8,
                         0.02, e) for e in range(epochs)]


def stopped(states: dict[int, Resume]) -> PackState:
    """A pack's checkpoint whose trials all hold their own weights (none in a slot)."""
    return PackState("", {}, {}, states)


def state(seed: int, epochs: int) -> Resume:
    return Resume(lenet(seed).state_dict(), curve(epochs))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("pack", [PackedLeNet, LoopedPack])
def test_round_trip_keeps_weights_curves_and_status(tmp_path, pack):
    ckpts = Checkpoints(tmp_path)
    net = pack([lenet(0), lenet(1), lenet(2)])
    # Trials 7 and 9 train in slots 0 and 2 (their weights are the pack's); 8 waits for a
    # slot with weights of its own (a pack taken over with more trials than slots).
    members = {7: Resume(None, curve(2)), 8: Resume(lenet(5).state_dict(), curve(1)),
               9: Resume(None, curve(2), "diverged", "collapsed")}
    ckpts.save("my study/1", "pack-7", PackState(net.LAYOUT, net.pack_state(), {7: 0, 9: 2},
                                                 members, 3))
    back = ckpts.load("my study/1", "pack-7")
    assert list(back) == [7, 8, 9]
    # where each trained, so that a takeover rebuilds the pack as it was
    assert [(back[k].slot, back[k].width) for k in (7, 8, 9)] == [(0, 3), (None, 3), (2, 3)]
    assert back[7].epochs == curve(2) and back[8].epochs == curve(1)
    assert (back[9].status, back[9].diverged) == ("diverged", "collapsed")
    for trial_id, seed in ((7, 0), (8, 5), (9, 2)):
        assert same_weights(back[trial_id].state_dict, lenet(seed).state_dict())
    # one folder under the checkpoints, named safely (names.folder_name)
    assert ckpts.path("my study/1", "pack-7").parent.parent == tmp_path
    assert ckpts.path("my study/1", "pack-7").parent.name.startswith("my_study_1-")


def test_a_checkpoint_written_before_slots_still_continues_its_trials(tmp_path):
    # Then every member was listed in pack order (member k at slot k), and those that had
    # stopped held their own weights.
    ckpts = Checkpoints(tmp_path)
    net = PackedLeNet([lenet(0), lenet(1), lenet(2)])
    path = ckpts.path("s", "pack-7")
    path.parent.mkdir(parents=True)
    torch.save({"layout": net.LAYOUT, "weights": net.pack_state(), "trials": {
        trial_id: {"state_dict": own, "status": status, "diverged": None, "sampler": None,
                   "epochs": [dict(vars(m)) for m in curve(2)]}
        for trial_id, own, status in ((7, None, "complete"),
                                      (8, lenet(5).state_dict(), "pruned"),
                                      (9, None, "complete"))}}, path)
    back = ckpts.load("s", "pack-7")
    assert back[8].status == "pruned"
    for trial_id, seed in ((7, 0), (8, 5), (9, 2)):
        assert same_weights(back[trial_id].state_dict, lenet(seed).state_dict())


def test_a_checkpoint_of_the_format_before_packed_weights_means_start_over(tmp_path):
    # That format (one state_dict a trial, no pack layout) is no longer read: such a pack's
    # trials start from epoch 1, as after a damaged checkpoint, and nothing fails.
    ckpts = Checkpoints(tmp_path)
    path = ckpts.path("s", "pack-1")
    path.parent.mkdir(parents=True)
    torch.save({1: {"state_dict": lenet(3).state_dict(), "status": "complete",
                    "diverged": None, "epochs": [dict(vars(m)) for m in curve(2)]}}, path)
    with pytest.warns(DamagedCheckpoint, match="cannot be read .*start over from epoch 1"):
        assert ckpts.load("s", "pack-1") == {}


def test_a_new_save_replaces_the_old_whole_and_leaves_no_temporary_file(tmp_path):
    ckpts = Checkpoints(tmp_path)
    ckpts.save("s", "pack-1", stopped({1: state(0, 1)}))
    ckpts.save("s", "pack-1", stopped({1: state(0, 2)}))
    assert len(ckpts.load("s", "pack-1")[1].epochs) == 2
    assert [p.name for p in ckpts.path("s", "pack-1").parent.iterdir()] == ["pack-1.pt"]


def test_missing_or_damaged_checkpoints_mean_start_over(tmp_path):
    ckpts = Checkpoints(tmp_path)
    assert ckpts.load("s", "pack-1") == {}
    ckpts.save("s", "pack-1", stopped({1: state(0, 1)}))
    path = ckpts.path("s", "pack-1")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(DamagedCheckpoint, match="fails its checksum .*start over from epoch 1"):
        assert ckpts.load("s", "pack-1") == {}
    ckpts.remove("s", "pack-1")
    ckpts.remove("s", "pack-1")  # removing twice is fine
    assert not path.exists()


def test_folder_beside_a_sqlite_file_or_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("LRSWEEP_CHECKPOINTS", raising=False)
    assert checkpoints_for("sqlite:///results/x.db").folder.as_posix() == \
        "results/x.db.checkpoints"
    assert checkpoints_for("postgresql://h/db").folder.as_posix() == "results/checkpoints"
    monkeypatch.setenv("LRSWEEP_CHECKPOINTS", str(tmp_path))
    assert checkpoints_for("postgresql://h/db").folder == tmp_path


def test_an_sgld_trials_sampler_state_round_trips(tmp_path):
    ckpts = Checkpoints(tmp_path)
    sampler = {"noise": torch.Generator().manual_seed(3).get_state(),
               "total": torch.rand(5, 10, dtype=torch.float64), "count": 2, "opportunities": 4}
    ckpts.save("s", "pack-1", stopped({1: Resume(lenet(0).state_dict(), [],
                                                  sampler=sampler)}))
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


def test_a_background_write_lands_before_the_checkpoint_is_removed(tmp_path, monkeypatch):
    save = Checkpoints.save

    def slow_save(*args):
        time.sleep(0.3)  # the pack ends while its last epoch is still being written
        save(*args)

    monkeypatch.setattr(Checkpoints, "save", slow_save)
    ckpts = Checkpoints(tmp_path)
    writer = BackgroundWriter(ckpts, "s", "pack-1")
    writer.save(stopped({1: state(0, 1)}))
    writer.save(stopped({1: state(0, 2)}))  # waits for the first: one write at a time
    writer.wait()
    assert len(ckpts.load("s", "pack-1")[1].epochs) == 2
    writer.save(stopped({1: state(0, 3)}))
    writer.remove()
    assert not ckpts.path("s", "pack-1").exists()  # no write came back after the removal


def test_a_failed_background_write_is_raised_once_by_the_training_thread(tmp_path):
    (tmp_path / "s").write_text("a file where the study's checkpoint folder goes")
    writer = BackgroundWriter(Checkpoints(tmp_path), "s", "pack-1")
    writer.save(stopped({1: state(0, 1)}))
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # reported once


def test_a_pack_begun_before_safe_folder_names_is_found_and_removed(tmp_path):
    # Before names.folder_name a name's unsafe characters became "_" ("my study" → my_study);
    # now such a name gets a hash: a checkpoint written the old way still continues its pack.
    ckpts = Checkpoints(tmp_path)
    old = tmp_path / "my_study" / "pack-1.pt"
    ckpts.save("my_study", "pack-1", stopped({4: state(4, 2)}))  # a safe name: the old place
    assert old.is_file() and ckpts.path("my study", "pack-1") != old
    resumed = ckpts.load("my study", "pack-1")
    assert list(resumed) == [4] and len(resumed[4].epochs) == 2
    ckpts.remove("my study", "pack-1")
    assert not old.exists()
    # A name too long for the old scheme: no old place to look in, and no error for it.
    assert ckpts.load("x" * 300, "pack-1") == {}
