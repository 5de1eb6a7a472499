"""Flat resident memory on long CPU streams: fixed glibc malloc thresholds.

glibc serves a large allocation (>= 128 KiB) with its own ``mmap`` and returns it to the system
when freed, but it raises that threshold to the size of each freed mapping ("dynamic mmap
threshold"). After a few frames every per-frame tensor of a model step is carved from the heap
instead, and the heap's free holes between long-lived blocks never shrink: a 10,000-frame
``recon run`` grew its RSS by ~85 MB that way (``tools/bench/bench_run_long.py``), with the state
and the map flat. Setting the thresholds explicitly (``mallopt``) turns the dynamic adjustment
off, so big temporaries keep going back to the system.

Only glibc has ``mallopt``; elsewhere, when the user already set ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` (glibc's own tunables), or with ``RECON_MALLOC=default``, nothing
changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024      # glibc's default starting value, now kept fixed
TRIM_THRESHOLD_BYTES = 256 * 1024      # free heap tops above this go back to the system

_pinned: bool | None = None


def pin_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds once per process; True when they are fixed."""
    global _pinned
    if _pinned is not None:
        return _pinned
    _pinned = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _pinned
    if ("MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
            or os.environ.get("RECON_MALLOC") == "default"):
        return _pinned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _pinned = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                       and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        _pinned = False
    return _pinned
