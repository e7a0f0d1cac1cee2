"""Samplers seeded per trial (`search/trial_seeds.py`): workers that start together on one
study draw different trials; one worker run again draws the same ones."""

from __future__ import annotations

import pytest

from conftest import study_toml
from lrsweep.search import spec
from lrsweep.search.provenance import create_or_load
from lrsweep.search.sampling import make_sampler
from lrsweep.search.space import suggest
from lrsweep.store.storage import open_storage

SPACE = 'base_lr = { low = 0.01, high = 1.0, log = true }'


def workers(tmp_path, sampler, count, file="store.db"):
    """`count` workers' studies on one fresh store, each with the study file's sampler, made
    before any trial is asked (workers started at once)."""
    parsed = spec.parse(study_toml("shared", sampler=sampler, trials=8,
                                   scheduler='["constant", "cosine", "sqrt"]', seed="[0, 1, 2]",
                                   base_lr=SPACE.split(" = ", 1)[1]), source="test.toml")
    url = f"sqlite:///{tmp_path / file}"
    studies = []
    for _ in range(count):
        study = create_or_load(parsed, open_storage(url), url, allow_changed=False)
        study.sampler = make_sampler(parsed)
        studies.append(study)
    return parsed, studies


def draws(parsed, studies, rounds):
    """Each worker asks a trial in turn, `rounds` times: the suggested configurations."""
    found = []
    for _ in range(rounds):
        for study in studies:
            found.append(suggest(parsed, study.ask()))
    return found


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp", "cmaes"])
def test_workers_started_together_draw_different_trials(tmp_path, sampler):
    # Seeded once, every worker's sampler drew the same sequence: trial 0 and trial 1 (two
    # workers' first trials) had one configuration and one seed, trained twice.
    parsed, studies = workers(tmp_path, sampler, 2)
    found = draws(parsed, studies, 3)
    rates = [config["base_lr"] for config in found]
    assert len(set(rates)) == len(rates), found


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_the_same_study_file_draws_the_same_trials_again(tmp_path, sampler):
    first = draws(*workers(tmp_path, sampler, 1, "one.db"), 4)
    again = draws(*workers(tmp_path, sampler, 1, "two.db"), 4)
    assert first == again


def test_a_resumed_study_draws_on_and_does_not_replay(tmp_path):
    parsed, (study,) = workers(tmp_path, "random", 1)
    before = draws(parsed, [study], 2)
    study.sampler = make_sampler(parsed)  # a new session: a sampler made afresh
    after = draws(parsed, [study], 2)
    assert {c["base_lr"] for c in before}.isdisjoint(c["base_lr"] for c in after)
    one_go = draws(*workers(tmp_path, "random", 1, "one-go.db"), 4)
    assert before + after == one_go  # a trial's draws depend on its number, not the session


@pytest.mark.parametrize("sampler", ["gp", "cmaes"])
def test_a_schedulers_own_dimension_is_drawn_without_a_warning_per_trial(sampler, capfd):
    # GP and CMA-ES draw a dimension only some schedulers take (exponent) at random, as the
    # README says, past their startup trials too, without Optuna's warning for each trial.
    import optuna
    parsed = spec.parse(study_toml("own", sampler=sampler, trials=14,
                                   scheduler='["constant", "poly"]',
                                   base_lr=SPACE.split(" = ", 1)[1],
                                   extra="exponent = { low = 0.5, high = 2.0 }"), source="t")
    study = optuna.create_study(sampler=make_sampler(parsed), direction="maximize")
    for number in range(14):
        trial = study.ask()
        params = suggest(parsed, trial)
        study.tell(trial, params["base_lr"] + number / 100)
    assert any(t.params["scheduler"] == "poly" for t in study.trials[10:])  # past startup
    assert "sampled independently" not in capfd.readouterr().err
