"""pytest plugin of tools/gpu_check.sh: records how the Triton kernels ran in this pytest process.

Loaded with ``-p tools.gpu_check_probe``; at the end of the session it writes, to the path in
``$GPU_CHECK_PROBE_OUT``, whether torch saw a CUDA device and the value of ``TRITON_INTERPRET`` after
tests/conftest.py ran (it sets ``TRITON_INTERPRET=1`` only when there is no CUDA device), so the report
can tell compiled kernels from interpreted ones without trusting the environment it started with.
"""

from __future__ import annotations

import json
import os


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("GPU_CHECK_PROBE_OUT")
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):  # xdist: the controller writes it
        return
    import torch

    cuda = torch.cuda.is_available()
    interpret = os.environ.get("TRITON_INTERPRET")
    info = {
        "TRITON_INTERPRET": interpret,
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "triton_mode": "interpreted" if interpret == "1" else "compiled (CUDA)" if cuda else "none",
    }
    with open(path, "w") as f:
        json.dump(info, f)
