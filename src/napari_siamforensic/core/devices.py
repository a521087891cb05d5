"""Device resolution and precision choice: the one place that decides where tensors live."""
from __future__ import annotations

from contextlib import contextmanager

import torch

_ACCEPTED = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (or None) into CUDA, then Apple MPS, then CPU; check explicit names.

    Raises ``ValueError`` for an unknown name or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, str):
        raise TypeError(f"`device` must be a string ({_ACCEPTED}), got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; expected {_ACCEPTED}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but Apple MPS is not available here; use 'auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; expected {_ACCEPTED}")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 / AMX)."""
    checker = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        return bool(checker()) if checker is not None else False
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype for ``precision`` on ``device``, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_fast_bf16() else None
        return None
    raise ValueError(f"`precision` must be 'auto', 'fp32' or 'bf16', got {precision!r}")


@contextmanager
def deterministic_kernels(device: torch.device):
    """On CUDA, make cuDNN use only deterministic convolution algorithms inside the block (and
    no benchmarking, which may pick another algorithm each run); elsewhere, nothing.

    Some of cuDNN's backward algorithms add with atomics, in an order that changes from run to
    run. Adam's first update is about ``lr * sign(gradient)`` per weight, so a gradient that is
    zero up to such rounding becomes a whole ``lr`` of difference: two trainings with the same
    seed then end apart. (An H200 run of the tests showed exactly that, ``branch.head_norm.bias``
    apart after two steps, before this existed; that this cures it is not yet checked on a
    GPU: ``python -m pytest tests/core --device cuda`` does.) The other
    settings (enabled, TF32) stay as the caller set them, and all are restored on exit, so the
    process-wide flags are changed only while the block runs.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=False, benchmark_limit=cudnn.benchmark_limit,
                     deterministic=True, allow_tf32=cudnn.allow_tf32):
        yield


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded explicitly (never the global RNG)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


_RETAINED = False


def freed_memory_retained() -> bool:
    """True once :func:`retain_freed_memory` has been applied in this process (it stays on)."""
    return _RETAINED


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory in the process instead of giving large blocks back
    to the system (``mallopt``: no ``mmap`` for big blocks, no trimming). Every forward pass on
    the CPU allocates activation buffers of tens to hundreds of MB; by default each is a fresh
    ``mmap`` that the kernel page-faults in again, which costs about as much CPU time as the
    arithmetic. Same results, about half the CPU time for embedding, at the price of a larger
    resident set (the process keeps its peak). Process-wide: the ``siamforensic`` command calls
    it for its embedding-heavy subcommands; call it yourself in a script that embeds many images.

    Returns True when applied (Linux with glibc), False elsewhere (nothing changes).
    """
    global _RETAINED
    if _RETAINED:
        return True
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):     # musl and other libcs have no mallopt
        return False
    m_trim_threshold, m_mmap_max = -1, -4   # from glibc's malloc.h
    _RETAINED = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2 ** 31 - 1))
    return _RETAINED
