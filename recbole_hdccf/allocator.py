"""Keep the memory a training process frees for its next step, instead of handing it back to the
kernel (glibc's malloc; elsewhere nothing changes).

glibc serves a block above its mmap threshold (128 KiB, rising with use to at most 32 MiB) with a
fresh ``mmap`` and unmaps it on ``free``, and gives the top of its heap back to the kernel past a
trim threshold. A training step allocates and frees tensors of the same sizes every batch, so
every step faults its memory in again, page by page, and the kernel zeroes each page. On this
project's 2-core machine that was most of ENMF's time: an epoch on ML-1M took 16.5 s, with more
system time than user time, and 3.6 s with the thresholds raised (``docs/speed.md``, "Freed
memory"); LightGCN and SimpleX gain about 1.1x, HDCCF nothing measurable.
Raising both thresholds to 1 GiB keeps freed blocks in the heap for the next step. The numbers a
run computes do not change; the cost is that the process's resident memory stays near its peak.

``import recbole_hdccf`` calls :func:`apply_from_environment`, so every entry point, benchmark
run and tuning trial gets it. ``RECBOLE_HDCCF_KEEP_FREED_MEMORY=0`` leaves glibc's defaults: the
setting belongs to the process (it cannot be undone for one run of several), so it is switched
by the environment, not by a run's config.
"""

from __future__ import annotations

import ctypes
import os

ENV_VAR = "RECBOLE_HDCCF_KEEP_FREED_MEMORY"
THRESHOLD_BYTES = 1 << 30
# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")

_kept = False


def _glibc_mallopt():
    """glibc's ``mallopt``, or None where the C library is not glibc (macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory(threshold: int = THRESHOLD_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold`` bytes for this process. Returns
    whether the process now keeps freed memory (False where the C library is not glibc)."""
    global _kept
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold)
    )
    return _kept


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process (run records carry it: the
    same run is faster with it, which matters to runs under a ``train_time_budget``)."""
    return _kept


def apply_from_environment() -> bool:
    """:func:`keep_freed_memory` unless ``RECBOLE_HDCCF_KEEP_FREED_MEMORY`` turns it off."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        raise ValueError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r}: use 1 to keep freed memory in the process "
            "(the default, faster) or 0 for glibc's defaults"
        )
    return keep_freed_memory()
