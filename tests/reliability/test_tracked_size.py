"""The tracked tree stays small enough to travel to a GPU machine with the wheels it needs.

tools/gpu_check.sh runs on a copy of the working tree that may be at most 64 MiB, the wheels of
``.whl/`` (kornia and kornia_rs, about 7 MiB) included. Committed eval reports are what grows:
recon.eval.report writes their per-frame curves compactly (``report_json``); this keeps the sum of
the tracked files under ``LIMIT_MIB`` so that a new report or weight file is noticed here, not on
the GPU machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MIB = 52


def test_tracked_files_fit_the_gpu_transfer_with_room_for_wheels():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the size is of the tracked files)")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / n for n in names.decode().split("\0") if n]
    sizes = {p: p.stat().st_size for p in paths if p.is_file()}
    total = sum(sizes.values())
    largest = sorted(sizes, key=sizes.get, reverse=True)[:5]
    listing = ", ".join(f"{p.relative_to(ROOT)} {sizes[p] / 2**20:.1f} MiB" for p in largest)
    assert total < LIMIT_MIB * 2**20, f"tracked files {total / 2**20:.1f} MiB; largest: {listing}"
