"""`lrsweep bench` on a tiny subset: it times the chapter's loop and the packs, and records
them. Speed itself is never asserted here (targets live in the benchmark records)."""

from __future__ import annotations

import dataclasses
import json
import mmap
from pathlib import Path

import pytest
import torch

from lrsweep import bench
from lrsweep.train import host_memory


def test_chapter_loop_runs_the_chapters_pipeline(fashion_dir):
    seconds = bench.chapter_loop(fashion_dir, bench.resolve_device("cpu"), subset=300,
                                 epochs=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)


def test_record_has_one_row_per_configuration_with_consistent_ratios(fashion_dir):
    record = bench.run("cpu", subset=300, packs=[1, 2], epochs=2, data_dir=str(fashion_dir),
                       log=lambda line: None)
    names = [row["name"] for row in record["rows"]]
    assert names == ["chapter loop (DataLoader, 4 workers)", "lrsweep K=1, shared batch",
                     "lrsweep K=2, shared batch", "lrsweep K=2, own orders"]
    chapter = record["rows"][0]
    for row in record["rows"]:
        assert len(row["epoch_seconds"]) == 2
        assert row["seconds_per_epoch"] == row["epoch_seconds"][1]  # the warm-up is dropped
        assert row["trial_epochs_per_second"] == pytest.approx(row["pack"] / row["seconds_per_epoch"])
        assert row["vs_chapter"] == pytest.approx(row["trial_epochs_per_second"]
                                                  / chapter["trial_epochs_per_second"])
    threads = torch.get_num_threads()  # "1 thread", "2 threads": the record names how many
    assert record["images_per_epoch"] == 300
    assert f", {threads} thread{'s' if threads != 1 else ''})" in record["hardware"]
    assert len(bench.table(record)) == 4
    assert record["host_memory"] == ("malloc keeps freed memory" if host_memory.glibc() else
                                     "malloc as it is")  # it changes wide packs' speed
    store = record["storage"]
    assert store["trials"] == 100 and store["batched_ms_per_trial"] > 0
    assert store["per_value_ms_per_trial"] > 0


def test_storage_cost_writes_what_a_real_trial_writes():
    store = bench.storage_cost(trials=3, epochs=4)
    assert store["trials"] == 3 and store["epochs"] == 4
    assert store["batched_ms_per_trial"] > 0 and store["per_value_ms_per_trial"] > 0


def test_bench_command_writes_its_json(lrsweep_cli, tmp_path):
    proc = lrsweep_cli("bench", "--subset", "256", "--packs", "1,2", "--epochs", "1",
                       "--no-chapter", "--out", "b.json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "b.json").read_text())
    assert [row["pack"] for row in record["rows"]] == [1, 2, 2]
    assert record["command"] == ("lrsweep bench --subset 256 --packs 1,2 --epochs 1 "
                                 "--no-chapter --out b.json")
    assert "trial-epochs / s" in proc.stdout
    assert record["precision"].startswith("fp32") and record["steps"] == "eager"  # the CPU's


def test_bench_times_packs_at_the_precision_asked(lrsweep_cli, tmp_path, monkeypatch):
    # What trains is the engine's (tests/test_precision.py): here, that bench asks for it.
    trained = []
    real = bench.engine.train_pack
    monkeypatch.setattr(bench.engine, "train_pack", lambda configs, splits: trained.extend(
        configs) or real([dataclasses.replace(c, precision="fp32") for c in configs], splits))
    record = bench.run("cpu", subset=256, packs=[2], epochs=1, chapter=False,
                       precision="bf16", log=lambda line: None)
    assert {c.precision for c in trained} == {"bf16"} and record["precision"].startswith("bf16")


@pytest.mark.parametrize("formulation", ["grouped", "patches"])
def test_bench_trains_and_records_the_convolutions_the_environment_asks(monkeypatch,
                                                                         formulation):
    from lrsweep.train import patches
    calls = []
    real = patches.convolutions
    monkeypatch.setattr(patches, "convolutions", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setenv("LRSWEEP_CONVOLUTIONS", formulation)
    record = bench.run("cpu", subset=256, packs=[2], epochs=1, chapter=False,
                       log=lambda line: None)
    assert record["convolutions"] == f"{formulation} convolutions"
    assert bool(calls) == (formulation == "patches")


@pytest.mark.parametrize("args, where", [(("--packs", "1,x"), "--packs"),
                                         (("--precision", "fp16"), "--precision")])
def test_bench_refuses_bad_input_before_it_measures(lrsweep_cli, tmp_path, args, where):
    proc = lrsweep_cli("bench", *args, "--out", "b.json")
    assert proc.returncode == 2 and where in proc.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_cpu_peak_memory_is_each_rows_own():
    cpu = torch.device("cpu")
    bench._reset_peak(cpu)
    before = bench._peak_mib(cpu)
    # 300 MiB mapped and touched by hand: new resident memory whatever malloc keeps.
    big = mmap.mmap(-1, 300 * 2**20)
    for page in range(0, len(big), mmap.PAGESIZE):
        big[page] = 1
    big.close()
    peak = bench._peak_mib(cpu)
    assert peak > before + 250
    bench._reset_peak(cpu)  # the next row starts from what the process holds now
    assert bench._peak_mib(cpu) < peak - 250


def test_a_failed_capture_is_recorded_as_eager_steps(monkeypatch):
    from lrsweep.train import graphs

    def failing(step, device, pool):
        raise RuntimeError("capture refused")

    monkeypatch.setattr(graphs, "enabled", lambda device, *a: True)  # as on CUDA
    monkeypatch.setattr(graphs, "wanted", lambda pack: True)
    monkeypatch.setattr(graphs, "_record", failing)
    record = bench.run("cpu", subset=256, packs=[1], epochs=1, chapter=False,
                       log=lambda line: None)
    assert record["steps"] == "eager (CUDA graph capture failed)"
    monkeypatch.setattr(graphs, "_record", lambda step, device, pool: (step, pool))
    record = bench.run("cpu", subset=256, packs=[1], epochs=1, chapter=False,
                       log=lambda line: None)
    assert record["steps"] == "CUDA graphs"
