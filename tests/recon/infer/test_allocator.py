"""glibc malloc thresholds pinned for the stream (recon.infer.allocator), checked in child processes
so the test process's own allocator stays as it was."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")

# A pattern that the dynamic mmap threshold turns into heap growth: free one big block (the
# threshold rises to its size), then per "frame" allocate temporaries of varying sizes between
# 0.25 and 1.1 MiB (one lives into the next frame) while small objects with longer lives pin the
# heap between them. Prints whether the thresholds were pinned and the RSS growth in MiB.
CHILD = r"""
import sys
from recon.infer.allocator import pin_malloc_thresholds
pinned = pin_malloc_thresholds() if sys.argv[1] == "pin" else False
import psutil, torch
p = psutil.Process()
x = torch.ones(4 << 20, dtype=torch.uint8)
del x                                                  # 4 MiB mapped and freed: threshold -> 4 MiB
start = p.memory_info().rss
keep, previous = [], None
for i in range(300):
    big = torch.ones((256 << 10) + (i % 7) * 100_000, dtype=torch.uint8)
    mid = torch.ones((512 << 10) + (i % 5) * 50_000, dtype=torch.uint8)
    keep.append(torch.ones(4096 + i % 3 * 1000, dtype=torch.uint8))
    if len(keep) > 50:
        keep.pop(0)
    previous, big = big, None
    del mid
print(pinned, (p.memory_info().rss - start) / 2**20)
"""


def _child(mode: str, env: dict | None = None) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    pinned, growth = out.stdout.split()
    return pinned == "True", float(growth)


@glibc
def test_pinned_thresholds_return_big_temporaries_to_the_system():
    pinned, growth = _child("pin")
    assert pinned
    assert growth < 4.0                          # measured 1.1 MiB; without pinning 9.7-15 (next test)


@glibc
def test_the_pattern_grows_without_pinning():
    """The reference: the same child with glibc's dynamic threshold keeps the freed blocks."""
    pinned, growth = _child("plain")
    assert not pinned and growth > 6.0


@glibc
@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "65536"}, {"RECON_MALLOC": "default"}])
def test_a_users_own_malloc_tunables_are_kept(env):
    pinned, _ = _child("pin", env)
    assert not pinned
