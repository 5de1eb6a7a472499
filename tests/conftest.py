"""Test-wide setup.

TRITON_INTERPRET must be set before any module that defines Triton kernels is imported, so it is
set here, at conftest import time, whenever no CUDA device is present: the kernels then run (slowly)
under the Triton interpreter on the CPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The tests are many small ops: one intra-op thread is as fast on an idle 2-core machine and far
# faster on a busy one (two threads wait on each other at every op).
torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
