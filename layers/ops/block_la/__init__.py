"""Block-causal (chunk-level) linear attention with per-channel decay at block boundaries.

``naive_block_la`` (reference loop over blocks), ``chunk_block_la`` (torch parallel form; Triton
kernels on CUDA) and ``triton_block_la`` (the kernels, loaded on first use so that importing this
package does not import Triton). One contract for all three; see ``naive.py`` and README.md.
"""

from __future__ import annotations

from typing import Any

from layers.ops.block_la.chunk import chunk_block_la, torch_block_la
from layers.ops.block_la.naive import check_block_la_inputs, naive_block_la

__all__ = ["check_block_la_inputs", "chunk_block_la", "naive_block_la", "torch_block_la", "triton_block_la"]


def __getattr__(name: str) -> Any:
    if name == "triton_block_la":
        from layers.ops.block_la.triton import triton_block_la

        return triton_block_la
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
