"""glibc's malloc thresholds while the calibration driver computes on the CPU.

A block forward on the CPU allocates and frees tens of megabytes of intermediates per batch.  Under glibc's
default *dynamic* thresholds, blocks above the mmap threshold are mapped afresh and freed memory at the top
of the heap is handed back to the kernel as soon as it exceeds the trim threshold, so every batch faults
its intermediates in again, page by page: GPTQ on SmolLM2-135M (one thread, 16 x 256 tokens) took 1.6-1.8
million minor page faults and 2.4-2.8 s of system time in a 28-30 s run; with the thresholds below, 0.15-0.3
million faults, 0.3-0.7 s and 26.8-27.9 s (benchmarks/README.md).

``retain_freed_memory`` fixes the thresholds at the ceilings glibc's dynamic adjustment can reach by itself
(mmap 32 MiB, trim 64 MiB), so freed blocks are reused instead of faulted in again; the peak resident set
grows by what the heap keeps (about 0.05x the dense model there).  It applies once per process and stays
(glibc cannot go back to dynamic thresholds); ``release_free_memory`` hands the heap's free memory back to
the kernel when the compression ends.  Nothing is changed where the allocator is not glibc's or where the
user chose malloc settings through the environment (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

log = logging.getLogger(__name__)

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: The ceilings of glibc's dynamic thresholds on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX, and the trim
#: threshold it sets alongside: twice the mmap threshold).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
#: Environment variables through which a user sets glibc's malloc behaviour (then left alone).
USER_MALLOC_SETTINGS = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)

_applied = False


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library of this process when it is glibc (it has ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # no handle on the process's own symbols (Windows)
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc


def user_chose_malloc_settings(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """True when the environment sets glibc malloc options (``MALLOC_*_`` or ``glibc.malloc`` tunables)."""
    if any(name in environ for name in USER_MALLOC_SETTINGS):
        return True
    return "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def retain_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds at their dynamic ceilings, once per process.  Returns True when
    they are set (now or before), False where left alone (not glibc, or the user's own settings)."""
    global _applied
    if _applied:
        return True
    if user_chose_malloc_settings():
        return False
    libc = _glibc()
    if libc is None:
        return False
    if not (
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ):
        return False
    _applied = True
    log.info(
        "glibc malloc thresholds fixed at mmap %d MiB, trim %d MiB for CPU calibration (set "
        "MALLOC_TRIM_THRESHOLD_ or MALLOC_MMAP_THRESHOLD_ to choose your own)",
        MMAP_THRESHOLD >> 20,
        TRIM_THRESHOLD >> 20,
    )
    return True


def release_free_memory() -> None:
    """Hand the free memory the heap keeps back to the kernel (after ``retain_freed_memory``)."""
    if _applied:
        libc = _glibc()
        if libc is not None:
            libc.malloc_trim(ctypes.c_size_t(0))
