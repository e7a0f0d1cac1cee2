"""The C library's allocator told to keep the memory a CPU pack frees, so that its next step
reuses it instead of mapping fresh pages.

glibc's malloc serves a block above its mmap threshold (adaptive, 32 MiB at most) with a
fresh mapping and unmaps it when it is freed, and gives the top of its heap back to the kernel
once more than its trim threshold lies free there. A CPU pack's step allocates and frees the
same large activations every step (the first convolution's output alone is 256·6K·784 floats:
29 MiB at K = 6, 39 MiB at K = 8), so each step page-faults tens of MiB in again, and the
kernel zeroes every page. On the 2-core CPU that made K = 8 a third slower per trial than
K = 4; kept, K = 8 runs 1.52–1.56× as fast and as fast per trial as K = 4, K = 6 1.11–1.13×,
K ≤ 4 unchanged (results/benchmarks/bench-before-after-cpu-2026-11-30-host-memory.txt). The
price: the process holds its peak of freed memory until it exits.

Only the allocator's bookkeeping changes, never a tensor's address alignment (PyTorch asks for
64 bytes) or its values: a trial's numbers are the same bit for bit (tested).
`LRSWEEP_KEEP_HOST_MEMORY=0` leaves the allocator as it is, for a process that embeds lrsweep
and cares more for its memory than for the speed of packs.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from lrsweep.train.device import KEEP_HOST_MEMORY_ENV as ENV
from lrsweep.train.device import switch

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_FREE_UP_TO = 2**31 - 1  # bytes free at the heap's top before any goes back (mallopt: int)

_kept = False


def keep() -> bool:
    """Serve every allocation from malloc's heap (no mapping per large block) and keep freed
    memory in it, for the rest of the process. True once set (by this or an earlier call);
    False where `$LRSWEEP_KEEP_HOST_MEMORY` is 0 or the C library has no glibc mallopt
    (another value raises `device.DeviceError`)."""
    global _kept
    if _kept:
        return True
    if not switch(ENV):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; the second call only once the first took.
    _kept = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE_UP_TO))
    return _kept


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (musl's and macOS's mallopt, where one
    exists, do not take these parameters), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # glibc's own symbol: raises AttributeError elsewhere
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    except (OSError, AttributeError):
        return None
    return libc
