"""Gated delta rule with per-channel decay (``S_t = (I - beta k k^T) diag(exp g) S_{t-1} + beta k v^T``).

``naive_recurrent_gated_delta`` (reference loop over tokens) and ``chunk_gated_delta`` (chunked
torch form, WY representation); same contract as :mod:`layers.ops.gla` plus ``beta [B, T, H]``.
"""

from __future__ import annotations

from layers.ops.gated_delta.chunk import chunk_gated_delta
from layers.ops.gated_delta.naive import check_gated_delta_inputs, naive_recurrent_gated_delta

__all__ = ["check_gated_delta_inputs", "chunk_gated_delta", "naive_recurrent_gated_delta"]
