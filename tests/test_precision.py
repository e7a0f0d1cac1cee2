"""[train] precision: FP32 unless a study file asks for TF32 or bf16. The TF32 settings set and
given back around training, autocast only for bf16, the setting read, refused and carried to
the trial's config, its pack, the stored study's checks, a re-run's file and the records."""

from __future__ import annotations

import doctest
import math
import warnings

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from conftest import study_toml
from test_engine import same_numbers
from lrsweep import schedules
from lrsweep.report import render, rerun
from lrsweep.search import spec, spec_types
from lrsweep.search.provenance import create_or_load
from lrsweep.search.space import trial_config
from lrsweep.search.spec import SpecError
from lrsweep.search.tell import user_attrs
from lrsweep.store.storage import open_storage
from lrsweep.train import precision, trials
from lrsweep.train.precision import PRECISIONS, applied, autocast, describe, tf32_enabled
from lrsweep.train.trials import EpochMetrics, TrialConfig, TrialResult

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # a device object only: nothing here runs on it


def raw() -> tuple:
    """The settings in the installed torch's own API, to compare exactly."""
    if precision.NEW_API:
        return (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision,
                torch.backends.cuda.matmul.fp32_precision)
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture(autouse=True)
def settings_kept():
    """Every test leaves torch's settings as it found them, whatever it did."""
    before = raw()
    yield
    if precision.NEW_API:
        (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision,
         torch.backends.cuda.matmul.fp32_precision) = before
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture(autouse=True)
def bf16_kernels(settings_kept, monkeypatch):
    """Whether the CPU has bf16 kernels is the machine's, and CI's machines differ: the tests
    here that are not about it see one that has them, so that none warns on an AVX2-only CPU
    (EmulatedPrecisionWarning, an error under `simplefilter("error")`). The warning's own test
    sets it both ways. (settings_kept first: its teardown reads NEW_API, which a test may
    patch with the same monkeypatch.)"""
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)


# --- the settings ------------------------------------------------------------------------

@pytest.mark.parametrize("name, inside, around", [
    ("tf32", (True, True), "fp32"),   # each from the opposite state, so that both show
    ("fp32", (False, False), "tf32"),
    ("bf16", (False, False), "tf32"),
])
def test_applied_sets_the_tf32_settings_and_gives_them_back(name, inside, around):
    outer = (True, True) if around == "tf32" else (False, False)
    before = raw()
    with applied(around, CPU):
        assert tf32_enabled() == outer
        with applied(name, CPU):
            assert tf32_enabled() == inside
        assert tf32_enabled() == outer
    assert raw() == before  # exactly, in the API's own values


def test_applied_gives_the_settings_back_after_an_exception():
    with applied("fp32", CPU):
        with pytest.raises(RuntimeError, match="boom"):
            with applied("tf32", CPU):
                assert tf32_enabled() == (True, True)
                raise RuntimeError("boom")
        assert tf32_enabled() == (False, False)


def test_the_default_torch_state_is_not_fp32_and_applied_fp32_makes_it_so():
    # PyTorch's own default lets cuDNN convolutions run TF32: what "fp32" must turn off.
    default = tf32_enabled()
    assert default[0] is True  # cuDNN convolutions: TF32 unless told otherwise
    with applied("fp32", CPU):
        assert tf32_enabled() == (False, False)
    assert tf32_enabled() == default


@pytest.mark.skipif(not hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"),
                    reason="this torch has only the old allow_tf32 flags")
def test_a_newer_torch_is_set_through_its_own_settings_without_warnings():
    # torch 2.9 warned when the old flags were set, and reading one after the new settings
    # were used raises: on a torch that has them, only they are used.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in PRECISIONS:
            with applied(name, CPU):
                value = "tf32" if name == "tf32" else "ieee"
                assert (torch.backends.cudnn.conv.fp32_precision,
                        torch.backends.cuda.matmul.fp32_precision) == (value, value)


@pytest.mark.skipif(not precision.NEW_API, reason="this torch has only the old allow_tf32 flags")
@pytest.mark.parametrize("name", PRECISIONS)
def test_torchs_checks_that_name_no_operator_agree_inside_and_after(name):
    # cuBLAS asks allowTF32CuBLAS() and torch.compile reads allow_tf32 without naming an
    # operator; torch raises there when the old flags disagree with the new settings.
    def unnamed() -> tuple[bool, bool, str]:
        return (torch._C._get_cudnn_allow_tf32(), torch._C._get_cublas_allow_tf32(),
                torch.get_float32_matmul_precision())

    around = "fp32" if name == "tf32" else "tf32"
    with applied(around, CPU):
        outer = unnamed()
        assert outer == ((True, True, "high") if around == "tf32" else (False, False, "highest"))
        with applied(name, CPU):
            tf32 = name == "tf32"
            assert unnamed() == (tf32, tf32, "high" if tf32 else "highest")
        assert unnamed() == outer


def test_the_old_flags_serve_an_older_torch(monkeypatch):
    # torch before the per-operator settings: allow_tf32, set and given back the same way.
    monkeypatch.setattr(precision, "NEW_API", False)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
    with applied("tf32", CPU):
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (
            True, True)
        with applied("bf16", CPU):
            assert (torch.backends.cudnn.allow_tf32,
                    torch.backends.cuda.matmul.allow_tf32) == (False, False)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (
        True, False)


@pytest.mark.parametrize("name", PRECISIONS)
def test_autocast_is_enabled_for_bf16_only(name):
    x, w = torch.ones(2, 1, 5, 5), torch.ones(3, 1, 3, 3)
    with autocast(name, CPU):
        dtypes = {(x.flatten(1) @ x.flatten(1).T).dtype, torch.nn.functional.conv2d(x, w).dtype,
                  torch.baddbmm(torch.zeros(1, 2, 2), x.view(1, 2, 25), x.view(1, 25, 2)).dtype}
    assert dtypes == {torch.bfloat16 if name == "bf16" else torch.float32}


@pytest.mark.parametrize("native", [True, False])
def test_bf16_without_bf16_kernels_warns_once_and_says_so_in_records(monkeypatch, native):
    from lrsweep.train import precision
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per place and message
        for _ in range(3):  # as a study's packs enter it, one after another
            for asked in PRECISIONS:
                with applied(asked, CPU):
                    pass
    slow = [w for w in caught if issubclass(w.category, precision.EmulatedPrecisionWarning)]
    assert len(slow) == (0 if native else 1)
    assert native or ("bf16" in str(slow[0].message) and "fp32" in str(slow[0].message))
    assert describe("bf16", CPU).endswith("; emulated: no bf16 kernels on this cpu") != native
    assert "emulated" not in describe("fp32", CPU) + describe("tf32", CPU)


def test_describe_says_what_each_precision_computes_in():
    assert describe("fp32", CUDA) == "fp32 (IEEE FP32 convolutions and matrix products)"
    assert describe("tf32", CPU) == "tf32 on cpu: FP32 (no TF32 on CPUs)"
    assert describe("tf32", CUDA).startswith("tf32 on cuda (TF32 tensor cores")
    assert describe("bf16", CPU).startswith("bf16 (forward under bf16 autocast;")
    assert "FP32" in describe("bf16", CPU)


@pytest.mark.parametrize("call", [lambda: applied("fp16", CPU).__enter__(),
                                  lambda: autocast("fp16", CPU), lambda: describe("fp16", CPU)])
def test_an_unknown_precision_is_refused_by_the_module(call):
    with pytest.raises(ValueError, match="'fp16' is not one of fp32, tf32, bf16"):
        call()


def test_the_study_files_vocabulary_is_the_modules():
    # spec_types keeps its own copy: it must not import torch (reports read study files).
    assert spec_types.PRECISIONS == PRECISIONS


def test_module_doctests():
    assert doctest.testmod(precision).failed == 0
    assert doctest.testmod(trials).failed == 0


# --- the study file ----------------------------------------------------------------------

def parse(*overrides: str, extra_train: str = "") -> spec.StudySpec:
    text = study_toml("p").replace("batch_size = 64", f"batch_size = 64\n{extra_train}")
    return spec.parse(text, source="p.toml", overrides=overrides)


def test_fp32_is_the_default_and_the_file_can_ask_for_tf32():
    assert parse().train.precision == "fp32"
    assert parse(extra_train='precision = "tf32"').train.precision == "tf32"


@pytest.mark.parametrize("value, shown", [('"fp16"', '"fp16"'), ("32", "32"),
                                          ('"FP32"', '"FP32"')])
def test_a_precision_not_offered_is_one_line_naming_the_key(value, shown):
    with pytest.raises(SpecError) as error:
        parse(extra_train=f"precision = {value}")
    assert str(error.value) == (f"p.toml: [train] precision: {shown} is not one of fp32, tf32, "
                                "bf16")


def test_set_bf16_reaches_the_trials_config_and_pack_key():
    s = parse("train.precision=bf16")
    config = trial_config(s, {"scheduler": "cosine", "seed": 0})
    assert config.precision == "bf16" and config.pack_key[-1] == "bf16"
    assert trial_config(parse(), {"scheduler": "cosine", "seed": 0}).precision == "fp32"


def test_tf32_and_fp32_trials_never_share_a_pack():
    schedule = schedules.build("constant", base_lr=0.3)
    keys = {p: TrialConfig(schedule, seed=1, epochs=2, precision=p).pack_key for p in PRECISIONS}
    assert len(set(keys.values())) == 3
    assert keys["tf32"][:-1] == keys["fp32"][:-1]  # they differ by the precision alone


def test_the_cli_refuses_fp16_in_one_line_exit_2_writing_nothing(lrsweep_cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    optuna.create_study(study_name="other", storage=url)
    before = (tmp_path / "store.db").read_bytes()
    bad = study_toml("bad").replace("batch_size = 64", 'batch_size = 64\nprecision = "fp16"')
    (tmp_path / "bad.toml").write_text(bad)
    (tmp_path / "good.toml").write_text(study_toml("good"))
    for args, message in [
            (("bad.toml",), 'bad.toml: [train] precision: "fp16" is not one of fp32, tf32, bf16'),
            (("good.toml", "--set", "train.precision=fp16"),
             'good.toml: --set train.precision=fp16: [train] precision: "fp16" is not one of')]:
        proc = lrsweep_cli("run", *args, "--storage", url)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert optuna.study.get_all_study_names(url) == ["other"]
        assert not (tmp_path / "results").exists()
        assert (tmp_path / "store.db").read_bytes() == before


# --- a stored study, its re-run, its records ----------------------------------------------

def test_changing_a_stored_studys_precision_needs_allow_changed(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    rdb = open_storage(url)
    create_or_load(spec.parse(study_toml("m"), source="m.toml"), rdb, url, False)
    tf32 = spec.parse(study_toml("m"), source="m.toml", overrides=("train.precision=tf32",))
    with pytest.raises(SpecError, match=r"\[train\] precision: 'fp32' → 'tf32'.*"
                                        "--allow-changed"):
        create_or_load(tf32, rdb, url, False)
    create_or_load(tf32, rdb, url, True)
    stored = optuna.load_study(study_name="m", storage=url).user_attrs
    assert stored["study_overrides"] == ["train.precision=tf32"]


def test_a_rerun_trains_in_the_searchs_precision(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="search", storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml("search", scheduler='["constant", "cosine"]'))
    study.set_user_attr("study_overrides", ["train.precision=bf16"])
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.8, params={"scheduler": "cosine"},
        distributions={"scheduler": CategoricalDistribution(["constant", "cosine"])},
        user_attrs={"seed": 0}))
    text = rerun.best_study_file("search", url, top=1, seeds=2)
    assert 'precision = "bf16"' in text
    assert spec.parse(text, source="rerun").train.precision == "bf16"


def test_each_trial_records_what_it_computed_in():
    config = TrialConfig(schedules.build("constant", base_lr=0.1), epochs=1, precision="tf32")
    metrics = EpochMetrics(0, 0.1, 1.0, 0.5, math.nan, math.nan, 0.5, 1.0)
    attrs = user_attrs(TrialResult(config, [metrics]), CPU, 10)
    assert attrs["precision"] == "tf32 on cpu: FP32 (no TF32 on CPUs)"


def test_the_report_names_the_recorded_precision_and_convolutions(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="r", storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml("r", scheduler='"constant"', seed="[0, 1]"))
    # The second seed trained with the other formulation (LRSWEEP_CONVOLUTIONS changed).
    for seed, value, formulation in ((0, 0.8, "patches"), (1, 0.7, "grouped")):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=value, params={"seed": seed},
            distributions={"seed": CategoricalDistribution([0, 1])},
            user_attrs={"lr": [0.1, 0.1], "train_loss": [2.0, 1.0], "train_acc": [0.5, 0.7],
                        "val_loss": [1.5, 1.2], "val_acc": [0.5, value],
                        "test_acc": [0.5, value], "epoch_seconds": [1.0, 1.0], "seed": seed,
                        "diverged": None, "pack_size": 1, "device": "cpu (test)",
                        "precision": describe("fp32", CPU), "convolutions": formulation}))
    text = render.write_report("r", url, tmp_path / "out").markdown.read_text()
    assert ("Hardware: cpu (test), fp32 (IEEE FP32 convolutions and matrix products), grouped "
            "and patches convolutions. Versions:") in text


# --- the engine at each precision (CPU) -----------------------------------------------------

@pytest.fixture(scope="module")
def tiny(fashion_dir):
    from lrsweep.train import data
    return data.load("cpu", data_dir=fashion_dir, validation=100, subset=256, test_subset=200)


def engine_config(seed, base_lr, name):
    return TrialConfig(schedules.build("constant", base_lr=base_lr), seed=seed, epochs=1,
                       batch_size=128, precision=name)


def test_a_bf16_trial_trains_in_bf16_and_tf32_on_the_cpu_is_fp32(tiny):
    from lrsweep.train import engine
    results = {name: engine.train(engine_config(0, 0.3, name), tiny) for name in PRECISIONS}
    weights = {name: r.state_dict for name, r in results.items()}
    assert all(torch.equal(weights["tf32"][k], weights["fp32"][k]) for k in weights["fp32"])
    assert not all(torch.equal(weights["bf16"][k], weights["fp32"][k]) for k in weights["fp32"])
    for k in weights["fp32"]:  # the same training, rounded otherwise: close, not equal
        torch.testing.assert_close(weights["bf16"][k], weights["fp32"][k], rtol=0, atol=0.05)
    assert all(w.dtype == torch.float32 for w in weights["bf16"].values())  # FP32 weights


def test_a_bf16_trials_numbers_do_not_depend_on_its_pack_on_the_cpu(tiny):
    from lrsweep.train import engine
    alone = engine.train_pack([engine_config(0, 0.3, "bf16")], tiny)[0]
    packed = engine.train_pack([engine_config(1, 0.1, "bf16"), engine_config(0, 0.3, "bf16"),
                                engine_config(2, 0.2, "bf16")], tiny)[1]
    assert all(torch.equal(alone.state_dict[k], packed.state_dict[k]) for k in alone.state_dict)
    assert same_numbers(alone.epochs[0], packed.epochs[0])


@pytest.mark.parametrize("name, expected", [("fp32", (False, False)), ("tf32", (True, True)),
                                            ("bf16", (False, False))])
def test_the_engine_trains_and_evaluates_inside_its_precision(tiny, monkeypatch, name, expected):
    from lrsweep.train import engine, pack
    seen = []
    step, evaluate = pack.fused_sgd_step, engine.evaluate

    def spy_step(*args):  # the step enters autocast itself (the bf16 test above shows it)
        seen.append(("step", tf32_enabled(), name == "bf16"))
        return step(*args)

    def spy_evaluate(*args, **kwargs):
        seen.append(("evaluate", tf32_enabled(), torch.is_autocast_enabled("cpu")))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(pack, "fused_sgd_step", spy_step)
    monkeypatch.setattr(engine, "evaluate", spy_evaluate)
    before = tf32_enabled()
    engine.train(engine_config(0, 0.1, name), tiny)
    assert {kind for kind, _, _ in seen} == {"step", "evaluate"}
    assert {(tf32, autocast) for _, tf32, autocast in seen} == {(expected, name == "bf16")}
    assert tf32_enabled() == before  # and given back after
