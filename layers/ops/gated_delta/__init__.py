"""Gated delta rule with per-channel decay (``S_t = (I - beta k k^T) diag(exp g) S_{t-1} + beta k v^T``).

``naive_recurrent_gated_delta`` (reference loop over tokens), ``chunk_gated_delta`` (chunked WY form:
torch with a hand-written backward on the CPU, Triton kernels on CUDA; ``backend=`` forces one) and
``triton_gated_delta`` (the kernels, loaded on first use so that importing this package does not
import Triton). Same contract as :mod:`layers.ops.gla` plus ``beta [B, T, H]``; ``g`` per key channel
``[B, T, H, K]`` or per head ``[B, T, H]``. See ``naive.py``, ``chunk.py``, ``triton.py`` and README.md.
"""

from __future__ import annotations

from typing import Any

from layers.ops.gated_delta.chunk import chunk_gated_delta, torch_chunk_gated_delta
from layers.ops.gated_delta.naive import check_gated_delta_inputs, naive_recurrent_gated_delta

__all__ = ["check_gated_delta_inputs", "chunk_gated_delta", "naive_recurrent_gated_delta",
           "torch_chunk_gated_delta", "triton_gated_delta"]


def __getattr__(name: str) -> Any:
    if name == "triton_gated_delta":
        from layers.ops.gated_delta.triton import triton_gated_delta

        return triton_gated_delta
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
