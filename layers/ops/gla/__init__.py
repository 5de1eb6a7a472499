"""Channel-wise gated linear attention (fla convention): ``S_t = diag(exp g_t) S_{t-1} + k_t v_t^T``,
``o_t = scale * q_t^T S_t``.

``naive_recurrent_gla`` (reference loop over tokens), ``chunk_gla`` (chunked form: torch on the CPU,
Triton kernels on CUDA) and ``triton_gla`` (the kernels, loaded on first use so that importing this
package does not import Triton). One contract for all; see ``naive.py``, ``chunk.py`` and README.md.
"""

from __future__ import annotations

from typing import Any

from layers.ops.gla.chunk import chunk_gla, torch_chunk_gla
from layers.ops.gla.naive import check_gla_inputs, naive_recurrent_gla

__all__ = ["check_gla_inputs", "chunk_gla", "naive_recurrent_gla", "torch_chunk_gla", "triton_gla"]


def __getattr__(name: str) -> Any:
    if name == "triton_gla":
        from layers.ops.gla.triton import triton_gla

        return triton_gla
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
