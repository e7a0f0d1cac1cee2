"""The C library's allocator told to keep the memory a CPU pack frees, so that its next step
reuses it instead of faulting fresh pages in.

glibc's malloc serves a block above its mmap threshold (adaptive, 32 MiB at most) with a
fresh mapping and unmaps it when it is freed, and gives the top of its heap back to the kernel
once more than its trim threshold lies free there. A CPU pack's step allocates and frees the
same large activations every step: the first convolution's output alone is 256·6K·784 floats,
27.6 MiB at K = 6 (served from the heap once the threshold has adapted, but its top trimmed
away again) and 36.8 MiB at K = 8 (above any threshold: mapped afresh every step). So each
step page-faulted tens of MiB in again, and the kernel zeroed every page. On the 2-core CPU
that gave K = 8 a third fewer trial-epochs per second than K = 4; kept, K = 8 runs 1.52–1.56×
as fast, level with K = 4 per trial, K = 6 1.11–1.13×, K ≤ 4 unchanged
(results/benchmarks/bench-before-after-cpu-2026-11-30-host-memory.txt). The price: the
process holds the memory its steps freed until it exits (or `release`).

Only the allocator's bookkeeping changes, never a tensor's address alignment (PyTorch asks for
64 bytes) or its values: a trial's numbers are the same bit for bit (tested).
`LRSWEEP_KEEP_HOST_MEMORY=0` leaves the allocator as it is, for a process that embeds lrsweep
and cares more for its memory than for the speed of packs.
"""

from __future__ import annotations

import ctypes
import functools
import os

from lrsweep.train.device import KEEP_HOST_MEMORY_ENV as ENV, setting_on

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_FREE_UP_TO = 2**31 - 1  # bytes free at the heap's top before any goes back (mallopt: int)

_kept: bool | None = None  # None: not asked yet in this process


def keep() -> bool:
    """Serve every allocation from malloc's heap (no mapping per large block) and keep freed
    memory in it, for the rest of the process; asked once, later calls say how it went. True
    when it took; False where `$LRSWEEP_KEEP_HOST_MEMORY` is 0 (another value raises
    `device.DeviceError`) or the C library is not glibc."""
    global _kept
    if _kept is None:
        if not setting_on(ENV):
            return False  # not asked: a later call may still ask
        libc = glibc()
        # mallopt returns 1 on success; the second call only once the first took.
        _kept = libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE_UP_TO))
    return _kept


def kept() -> bool:
    """Whether this process's malloc keeps freed memory (`keep` asked and it took)."""
    return bool(_kept)


def release() -> None:
    """Hand the free memory malloc holds back to the kernel now (glibc's malloc_trim), keeping
    the setting: a benchmark's next row then starts from what the process really uses."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The process's own C library when it is glibc, else None (musl's mallopt ignores these
    parameters; macOS and Windows have none)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError, AttributeError):  # no such name here, or no confstr at all
        return None
    libc = ctypes.CDLL(None)  # the symbols already loaded into this process
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc
