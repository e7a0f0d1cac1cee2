"""A CPU pack keeps the memory its steps free (host_memory): large blocks come from malloc's
heap and stay there until released, a pack's steps stop faulting pages in, its numbers are the
same bit for bit either way, and LRSWEEP_KEEP_HOST_MEMORY=0 leaves the allocator alone. Each
case runs in a fresh Python: the setting lasts as long as its process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lrsweep.train import host_memory

LIBC = host_memory.glibc()
glibc_only = pytest.mark.skipif(LIBC is None, reason="the allocator setting is glibc's")
BLOCK = 256 * 2**20

# What malloc maps for a held 256 MiB tensor, and what its heap keeps free once it is freed
# (glibc's mallinfo2: hblkhd, fordblks), and the process's resident memory: before
# host_memory.keep(), after it, and after release(). 256 MiB is above any trim threshold glibc sets by itself (64 MiB at most): only
# keep()'s keeps it free.
ALLOCATOR = r"""
import ctypes, json, os, torch
from lrsweep.train import host_memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
BLOCK = 256 * 2**20

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def allocate():
    x = torch.ones(BLOCK, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd
    del x
    return {"mapped": mapped, "free": libc.mallinfo2().fordblks, "resident": resident()}

before = allocate()
kept = host_memory.keep()
after = allocate()
host_memory.release()
print(json.dumps({"before": before, "kept": kept, "after": after, "released": resident()}))
"""

# A pack of 8 trials (mixed seeds and rates) for three epochs of batches of 256, whose first
# convolution's output (36.8 MiB) glibc maps afresh and unmaps each step unless kept: above
# 32 MiB, the most its self-adjusting mapping threshold rises to, so every run maps it. (A
# pack of 6, 27.6 MiB, was trimmed off the heap top in some runs and kept in others, as the
# heap's layout fell: a test of it failed once in CI.) Printed: whether memory is kept, the
# minor page faults of a second run like the first (transparent huge pages off, so that pages
# are counted alike on every host), and a hash of every final weight tensor with every epoch's
# metrics.
PACK = r"""
import ctypes, hashlib, resource, sys, torch
from lrsweep import schedules
from lrsweep.train import data, engine, host_memory
from lrsweep.train.trials import TrialConfig

ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
splits = data.load("cpu", data_dir=sys.argv[1], validation=200, subset=768, test_subset=300)
configs = [TrialConfig(schedules.build("constant", base_lr=lr), seed=seed, epochs=3)
           for seed, lr in ((0, 0.1), (1, 0.2), (0, 0.3), (2, 0.1), (1, 0.05), (3, 0.4),
                            (2, 0.25), (3, 0.15))]
engine.train_pack(configs, splits)  # the allocator's first steps: its heap grows once
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
results = engine.train_pack(configs, splits)
print(host_memory.kept(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
for result in results:
    print(repr([(m.train_loss, m.train_acc, m.test_acc, m.test_nll) for m in result.epochs]))
    print({key: hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest()
           for key, value in result.state_dict.items()})
"""


def run(script: str, *args: str, keep: bool = True) -> str:
    env = dict(os.environ)
    env.pop(host_memory.ENV, None)
    if not keep:
        env[host_memory.ENV] = "0"
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not hasattr(LIBC, "mallinfo2"), reason="glibc's mallinfo2: 2.33 on")
def test_large_blocks_come_from_the_heap_and_stay_there_until_released():
    out = json.loads(run(ALLOCATOR))
    assert out["before"]["mapped"] >= BLOCK       # glibc's default: a mapping of its own
    assert out["kept"] is True
    assert out["after"]["mapped"] < BLOCK          # served by the heap
    assert out["after"]["free"] >= BLOCK           # and kept there when freed
    assert out["after"]["resident"] - out["released"] >= BLOCK  # until release() hands it back


@pytest.mark.skipif(not hasattr(LIBC, "mallinfo2"), reason="glibc's mallinfo2: 2.33 on")
def test_the_environment_can_leave_the_allocator_alone():
    out = json.loads(run(ALLOCATOR, keep=False))
    assert out["kept"] is False
    assert out["after"]["mapped"] >= BLOCK


@glibc_only
def test_a_packs_numbers_are_the_same_whether_memory_is_kept_or_not(fashion_dir):
    kept = run(PACK, str(fashion_dir)).splitlines()
    alone = run(PACK, str(fashion_dir), keep=False).splitlines()
    (kept_flag, kept_faults), (alone_flag, alone_faults) = (
        (line.split()[0], int(line.split()[1])) for line in (kept[0], alone[0]))
    assert kept_flag == "True" and alone_flag == "False"  # the CPU pack asked for it
    # and its steps reuse memory: alone, ~4 faults against ~200,000; once, on a machine busy
    # with other jobs, 9,412 against 84,683 (a tenth failed it): a quarter still tells them
    assert kept_faults * 4 < alone_faults
    assert kept[1:] == alone[1:]
