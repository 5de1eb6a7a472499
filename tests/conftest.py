"""Test-wide setup.

TRITON_INTERPRET must be set before any module that defines Triton kernels is imported, so it is
set here, at conftest import time, whenever no CUDA device is present: the kernels then run (slowly)
under the Triton interpreter on the CPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
