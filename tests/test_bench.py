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
from lrsweep.bench import rows
from lrsweep.train import device, host_memory


def test_chapter_loop_runs_the_chapters_pipeline(fashion_dir):
    seconds = bench.chapter_loop(fashion_dir, bench.resolve_device("cpu"), subset=300,
                                 epochs=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)


def test_record_has_one_row_per_configuration_with_consistent_ratios(fashion_dir):
    record = bench.run("cpu", subset=300, packs=[1, 2], epochs=2, data_dir=str(fashion_dir),
                       log=lambda line: None)
    names = [row["name"] for row in record["rows"]]
    assert names == ["chapter loop (DataLoader, 4 workers)",
                     "lrsweep K=1 (a masked slot beside it)", "lrsweep K=2, shared batch",
                     "lrsweep K=2, own orders"]
    chapter = record["rows"][0]
    assert record["timing"].endswith("paired ratio (one round: no interval; --repeats 2 or "
                                     "more gives one)")
    for row in record["rows"]:
        (seconds,) = row["epoch_seconds"]  # one round of two epochs
        assert len(seconds) == 2 and row["rounds"] == [0]
        assert row["seconds_per_epoch"] == seconds[1]  # the warm-up is dropped
        assert row["trial_epochs_per_second"] == pytest.approx(
            row["pack"] / row["seconds_per_epoch"])
        assert row["vs_chapter"] == pytest.approx(row["trial_epochs_per_second"]
                                                  / chapter["trial_epochs_per_second"])
        assert row["vs_chapter_interval"] is None  # one round: no interval
    threads = torch.get_num_threads()  # "1 thread", "2 threads": the record names how many
    assert record["images_per_epoch"] == 300
    assert f", {threads} thread{'s' if threads != 1 else ''})" in record["hardware"]
    assert f", {torch.backends.cpu.get_cpu_capability()}" in record["hardware"]
    assert len(bench.table(record)) == 4
    assert record["host_memory"] == ("malloc keeps freed memory" if host_memory.glibc() else
                                     "malloc as it is")  # it changes wide packs' speed
    store = record["storage"]
    assert store["trials"] == 100 and store["batched_ms_per_trial"] > 0
    from lrsweep import tables
    assert "warm-up" not in tables.bench(record).title  # two epochs: the first left out
    assert "1 epoch, so its warm-up is timed" in tables.bench({**record, "epochs": 1}).title
    assert store["per_value_ms_per_trial"] > 0


def test_rounds_take_turns_and_compare_each_pack_with_the_chapter_round_by_round(
        fashion_dir, monkeypatch):
    # The chapter's loop (timed for real in the test above) as a different time each round:
    # each pack must be paired with its own round's.
    calls = []
    monkeypatch.setattr(bench, "chapter_loop",
                        lambda *args: calls.append(args) or [9.0, 0.1 * len(calls)])
    said = []
    record = bench.run("cpu", subset=300, packs=[2], epochs=2, repeats=3,
                       data_dir=str(fashion_dir), log=said.append)
    started = [line.split(" ...")[0].split(":")[0] for line in said if line.endswith("...")
               and "storage" not in line]
    assert started == ["chapter loop (DataLoader, 4 workers)", "lrsweep K=2, shared batch",
                       "lrsweep K=2, own orders"] * 3  # in turn, not one configuration's rounds
    assert [line for line in said if line.startswith("round")] == [
        "round 1 of 3", "round 2 of 3", "round 3 of 3"]
    chapter, *packs = record["rows"]
    assert record["repeats"] == 3
    assert record["timing"].endswith("with a 95% t interval over the 3 rounds")
    assert (chapter["vs_chapter"], chapter["vs_chapter_interval"]) == (1.0, None)
    for row in record["rows"]:
        assert row["rounds"] == [0, 1, 2] and len(row["epoch_seconds"]) == 3
        assert row["round_seconds_per_epoch"] == [s[1] for s in row["epoch_seconds"]]
        assert row["seconds_per_epoch"] == sorted(row["round_seconds_per_epoch"])[1]
    assert chapter["round_seconds_per_epoch"] == pytest.approx([0.1, 0.2, 0.3])
    for row in packs:  # each round's pack against the same round's chapter loop
        ratios = [2 * c / p for c, p in zip(chapter["round_seconds_per_epoch"],
                                             row["round_seconds_per_epoch"])]
        assert row["vs_chapter"] == pytest.approx((ratios[0] * ratios[1] * ratios[2]) ** (1 / 3))
        low, high = row["vs_chapter_interval"]
        assert low < row["vs_chapter"] < high
    assert "[" in bench.table(record)[1][3]  # the interval is printed beside the ratio


def test_every_round_times_the_chapter_loop_with_the_allocator_as_the_packs_have_it(
        monkeypatch):
    monkeypatch.setattr(host_memory, "_kept", None)  # as in a fresh process: nothing asked yet
    seen = []
    monkeypatch.setattr(bench, "chapter_loop",
                        lambda *args: seen.append(host_memory.kept()) or [1.0])
    bench.run("cpu", subset=256, packs=[2], epochs=1, repeats=2, log=lambda line: None)
    assert seen == [host_memory.glibc() is not None] * 2  # round 1 too, before any pack


def test_paired_ratio_interval_is_the_t_interval_of_the_log_ratios():
    import math
    from scipy import stats
    pack = rows.summarise("K=4", 4, {0: [1.0, 1.0], 1: [1.0, 2.0], 2: [0.0, 1.0]}, 0.0)
    chapter = rows.summarise("chapter", 1, {0: [0.0, 2.0], 1: [0.0, 4.0], 2: [0.0, 2.5],
                                            3: [0.0, 9.0]}, 0.0)
    ratio, (low, high) = rows.paired_ratio(pack, chapter)  # round 3: the chapter's alone
    logs = [math.log(8), math.log(8), math.log(10)]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert ratio == pytest.approx(math.exp(mean))
    assert (low, high) == pytest.approx((math.exp(mean - half), math.exp(mean + half)))


# Out of memory as the GPU's allocator says it, and as PyTorch's CPU allocator does.
OUT_OF_MEMORY = [torch.cuda.OutOfMemoryError("CUDA out of memory"),
                 RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: "
                              "can't allocate memory: you tried to allocate 14450688000 bytes.")]


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["cuda", "cpu"])
def test_a_pack_out_of_memory_is_skipped_in_every_mode_and_round(monkeypatch, error):
    real = bench.engine.train_pack

    def four_too_many(configs, splits):
        if len(configs) == 4:
            raise error
        return real(configs, splits)

    monkeypatch.setattr(bench.engine, "train_pack", four_too_many)
    said = []
    record = bench.run("cpu", subset=256, packs=[2, 4], epochs=1, repeats=2, chapter=False,
                       log=said.append)
    assert [row["name"] for row in record["rows"]] == ["lrsweep K=2, shared batch",
                                                       "lrsweep K=2, own orders"]
    assert said.count("  out of memory: skipped") == 1
    assert all(row["vs_chapter"] is None for row in record["rows"])


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
                                         (("--precision", "fp16"), "--precision"),
                                         (("--repeats", "0"), "--repeats")])
def test_bench_refuses_bad_input_before_it_measures(lrsweep_cli, tmp_path, args, where):
    proc = lrsweep_cli("bench", *args, "--out", "b.json")
    assert proc.returncode == 2 and where in proc.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_cpu_peak_memory_is_each_rows_own():
    cpu = torch.device("cpu")
    rows.reset_peak(cpu)
    before = rows.peak_mib(cpu)
    # 300 MiB mapped and touched by hand: new resident memory whatever malloc keeps.
    big = mmap.mmap(-1, 300 * 2**20)
    for page in range(0, len(big), mmap.PAGESIZE):
        big[page] = 1
    big.close()
    peak = rows.peak_mib(cpu)
    assert peak > before + 250
    rows.reset_peak(cpu)  # the next row starts from what the process holds now
    assert rows.peak_mib(cpu) < peak - 250


def test_a_failed_capture_is_recorded_as_eager_steps(monkeypatch):
    from lrsweep.train import graphs

    def failing(step, device, pool):
        raise RuntimeError("capture refused")

    monkeypatch.setattr(graphs, "enabled", lambda device, *a: True)  # as on CUDA
    monkeypatch.setattr(graphs, "wanted", lambda pack: True)
    monkeypatch.setattr(graphs, "_record", failing)
    with pytest.warns(graphs.CaptureWarning, match="capture refused.*trains eagerly"):
        record = bench.run("cpu", subset=256, packs=[1], epochs=1, chapter=False,
                           log=lambda line: None)
    assert record["steps"] == "eager (CUDA graph capture failed)"
    monkeypatch.setattr(graphs, "_record", lambda step, device, pool: (step, pool))
    record = bench.run("cpu", subset=256, packs=[1], epochs=1, chapter=False,
                       log=lambda line: None)
    assert record["steps"] == "CUDA graphs"


CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16

processor\t: 1
model name\t: another
flags\t\t: fpu
"""


def test_a_cpu_is_named_with_the_kernels_torch_uses_and_amx(tmp_path, monkeypatch):
    source = tmp_path / "cpuinfo"
    source.write_text(CPUINFO)
    assert device.cpu_info(source) == ("Intel(R) Xeon(R) Platinum",
                                       {"fpu", "avx2", "avx512f", "avx512_bf16", "amx_tile",
                                        "amx_bf16"})
    assert device.cpu_info(tmp_path / "none")[1] == set()  # no /proc: the model, no flags
    read = device.cpu_info
    monkeypatch.setattr(device, "cpu_info", lambda: read(source))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    describe = device.describe_device.__wrapped__  # the cached one keeps this machine's
    for text, capability, said in (
            (CPUINFO, "AVX512", "cpu (Intel(R) Xeon(R) Platinum, AVX512 + AMX, 2 threads)"),
            (CPUINFO.replace(" amx_tile", ""), "AVX512",
             "cpu (Intel(R) Xeon(R) Platinum, AVX512, 2 threads)"),
            ("model name : AMD EPYC\nflags : fpu avx2\n", "AVX2",
             "cpu (AMD EPYC, AVX2, 2 threads)")):
        source.write_text(text)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert describe(torch.device("cpu")) == said
