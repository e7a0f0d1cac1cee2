"""The one door to Optuna's private API (lrsweep.store.optuna_private): each use works on the
Optuna lrsweep was tested with, and takes its public fallback, or stops with one line naming
the Optuna version, where the private piece is unknown."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from lrsweep.search import loop, spec
from lrsweep.search.ask import ask_pack
from lrsweep.search.heartbeats import Leases
from lrsweep.store import leases, optuna_private, storage
from lrsweep.store.grid_claims import claim
from conftest import study_toml


@pytest.fixture(params=["known", "unknown"])
def internals(request, monkeypatch):
    """Optuna's internals as lrsweep knows them, or as an untested Optuna would have them."""
    monkeypatch.setattr(optuna_private, "AVAILABLE", request.param == "known")
    return request.param


@pytest.mark.parametrize("version, tested", [("4.0.0", True), ("5.0.0", True), ("5.2.1", True),
                                             ("3.6.1", False), ("6.0.0", False),
                                             ("6.0.0.dev0", False), ("main", False)])
def test_the_tested_majors_are_4_and_5(version, tested):
    assert optuna_private._tested(version) is tested


def test_this_optuna_is_a_tested_one():
    # pyproject.toml pins optuna to the tested majors: the fast paths are the ones in use.
    assert optuna_private.AVAILABLE


@pytest.mark.parametrize("moved", [False, True], ids=["helper as now", "helper changed"])
def test_telling_works_whatever_optunas_helper_looks_like(monkeypatch, internals, moved):
    from optuna.study import _tell as optuna_tell

    if moved:  # a future Optuna whose private helper takes other arguments
        monkeypatch.setattr(optuna_tell, "_tell_with_warning", lambda study, frozen: None)
    opened = optuna.create_study()
    trial = opened.ask()
    optuna_private.tell(opened, trial, 0.5)
    pruned = opened.ask()
    optuna_private.tell(opened, pruned, state=TrialState.PRUNED)
    assert [(t.state, t.value) for t in opened.trials] == [(TrialState.COMPLETE, 0.5),
                                                           (TrialState.PRUNED, None)]


def test_a_pack_is_asked_with_either_internals(tmp_path, internals):
    opened = optuna.create_study(storage=storage.open_storage(f"sqlite:///{tmp_path / 's.db'}"),
                                 study_name="s")
    opened.enqueue_trial({"x": 0.25})
    if internals == "unknown":  # no leases without Optuna's tables: asking is still public
        trials = [optuna_private.new_trial(opened) for _ in range(3)]
    else:
        with Leases(opened, []) as held:
            trials = ask_pack(opened, 3, held)
    assert len({optuna_private.trial_id(t) for t in trials}) == 3
    assert [t.state for t in opened.get_trials()] == [TrialState.RUNNING] * 3


def test_leases_and_grid_claims_need_a_tested_optuna_and_say_so(tmp_path, monkeypatch):
    opened = optuna.create_study(storage=storage.open_storage(f"sqlite:///{tmp_path / 's.db'}"),
                                 study_name="s")
    trial = opened.ask()
    monkeypatch.setattr(optuna_private, "AVAILABLE", False)
    for attempt in (lambda: leases.record_heartbeats(opened, [optuna_private.trial_id(trial)]),
                    lambda: leases.claim_stale_trials(opened),
                    lambda: claim(opened, {"x": 1}, opened.trials[0])):
        with pytest.raises(optuna_private.OptunaVersionError) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message and f"this is Optuna {optuna.__version__}" in message
        assert "needs Optuna 4 or 5" in message


def test_running_a_study_with_an_untested_optuna_stops_before_writing(tmp_path, monkeypatch,
                                                                      fashion_dir):
    monkeypatch.setattr(optuna_private, "AVAILABLE", False)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(optuna_private.OptunaVersionError, match="running a study needs Optuna"):
        loop.run(spec.parse(study_toml("s"), source="s.toml"), storage=url, device="cpu",
                 data_dir=str(fashion_dir))
    assert not (tmp_path / "store.db").exists()
