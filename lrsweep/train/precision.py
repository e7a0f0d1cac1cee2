"""A study's training arithmetic, its `[train] precision`: IEEE FP32 unless the study file
asks for TF32 tensor cores ("tf32") or a forward pass under bf16 autocast ("bf16").

PyTorch's own default on a GPU is neither: cuDNN convolutions in TF32, cuBLAS matrix products
in FP32. `applied` sets both for the duration, so "fp32" means FP32 on every device. A CPU has
no TF32: there "tf32" computes IEEE FP32 (the settings set here are CUDA's; oneDNN's CPU ones
are left at their IEEE default).

    >>> import torch
    >>> cpu = torch.device("cpu")
    >>> before = tf32_enabled()
    >>> with applied("tf32", cpu):
    ...     tf32_enabled()
    (True, True)
    >>> tf32_enabled() == before
    True
    >>> for precision in PRECISIONS:
    ...     with autocast(precision, cpu):
    ...         print(precision, (torch.ones(2, 2) @ torch.ones(2, 2)).dtype)
    fp32 torch.float32
    tf32 torch.float32
    bf16 torch.bfloat16
    >>> describe("tf32", cpu)
    'tf32 on cpu: FP32 (no TF32 on CPUs)'
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch

# Also in search/spec_types.py, which must not import torch (reports read study files).
PRECISIONS = ("fp32", "tf32", "bf16")


def _new_api() -> bool:
    """Newer torch (2.9 on): per-operator `fp32_precision` ("ieee" | "tf32"), where setting
    the old `allow_tf32` flags warned (2.9) and reading one after the new ones were set
    raises (2.14). Older torch: the old flags only."""
    return hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


NEW_API = _new_api()


def _get() -> tuple:
    """The settings as they are, in the API's own values, to restore exactly."""
    if NEW_API:
        return (torch.backends.cudnn.conv.fp32_precision,
                torch.backends.cudnn.rnn.fp32_precision,
                torch.backends.cuda.matmul.fp32_precision)
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def _set(*values) -> None:
    """(cuDNN, cuBLAS) settings in the old API; (conv, rnn, matmul) in the new, cuDNN's RNN
    setting following its convolutions' (nothing here has an RNN).

    With the new settings, torch still checks them against the old flags wherever its code
    asks without naming an operator (cuBLAS's `allowTF32CuBLAS`, the `allow_tf32` flags that
    torch.compile reads) and raises if they disagree ("a mix of the legacy and new APIs"):
    measured on torch 2.14, setting `matmul.fp32_precision = "tf32"` alone made that check
    raise, and `conv`/`rnn` = "ieee" alone made cuDNN's. So the old flags are set first, to
    agree (through torch's own C setters, which warn of nothing on 2.14), then the new
    settings exactly."""
    if NEW_API:
        conv, _, matmul = values
        torch._C._set_cudnn_allow_tf32(conv == "tf32")
        torch._C._set_cublas_allow_tf32(matmul == "tf32")
        (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision,
         torch.backends.cuda.matmul.fp32_precision) = values
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = values


def tf32_enabled() -> tuple[bool, bool]:
    """Whether CUDA may use TF32 now: (cuDNN convolutions, cuBLAS matrix products)."""
    if not NEW_API:
        return bool(torch.backends.cudnn.allow_tf32), bool(torch.backends.cuda.matmul.allow_tf32)
    every = getattr(torch.backends, "fp32_precision", "none")  # "none": the parent's setting
    conv = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.fp32_precision, every)
    matmul = (torch.backends.cuda.matmul.fp32_precision, every)
    return tuple(next((v for v in chain if v != "none"), "ieee") == "tf32"
                 for chain in (conv, matmul))


class EmulatedPrecisionWarning(UserWarning):
    """bf16 asked of a device without bf16 kernels: the numbers are bf16's, the speed is not."""


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 kernels: on a CPU, oneDNN's, which need AVX-512 (or AVX-NE-
    CONVERT); without them torch emulates bf16, measured ten times slower than FP32 on an
    AMD EPYC with AVX2 only. A device torch cannot say about counts as having them."""
    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
        if device.type == "cpu":  # torch's own check, as its test suite uses it
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    return True


@contextlib.contextmanager
def applied(precision: str, device: torch.device) -> Iterator[None]:
    """TF32 allowed for convolutions and matrix products under "tf32", forbidden under "fp32"
    and "bf16" (what bf16 autocast leaves in FP32 stays IEEE FP32); the previous settings come
    back afterwards, also after an exception. The settings are the process's: `device` does
    not change them (on a CPU they change nothing). bf16 on a device without bf16 kernels is
    trained as asked, with a warning (once a process) that it is emulated and slow."""
    _check(precision)
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(f"precision bf16 on {device.type}: this {device.type} has "
                      "no bf16 kernels (oneDNN's need AVX-512), so bf16 is emulated, which "
                      "measured ten times slower than fp32; fp32 is the faster choice here",
                      EmulatedPrecisionWarning, stacklevel=3)
    tf32 = precision == "tf32"
    value = ("tf32" if tf32 else "ieee") if NEW_API else tf32
    before = _get()
    _set(*[value] * len(before))
    try:
        yield
    finally:
        _set(*before)


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The forward pass's context: bf16 autocast on the device under "bf16", else disabled."""
    _check(precision)
    # No cast cache: each weight is cast once a forward anyway, and a cache kept across steps
    # would hold stale casts inside a captured CUDA graph (torch.cuda.graph's documentation).
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                          cache_enabled=False)


def describe(precision: str, device: torch.device) -> str:
    """One line for records: what `precision` computes in on `device`."""
    _check(precision)
    if precision == "fp32":
        return "fp32 (IEEE FP32 convolutions and matrix products)"
    if precision == "bf16":
        return ("bf16 (forward under bf16 autocast; loss, gradients' accumulation into FP32 "
                "weights and the SGD update in FP32)"
                + ("" if native_bf16(device) else f"; emulated: no bf16 kernels on this "
                   f"{device.type}"))
    if device.type == "cuda":
        return "tf32 on cuda (TF32 tensor cores for convolutions and matrix products)"
    return f"tf32 on {device.type}: FP32 (no TF32 on CPUs)"


def _check(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
