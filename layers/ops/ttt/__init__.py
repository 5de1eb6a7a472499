"""TTT with a SwiGLU fast weight (LaCT-style): sequential reference and frozen-kernel parallel form.

``ttt_sequential`` supports every option (update_hidden, weight norm, Muon, momentum,
retention);
``ttt_parallel`` is its exact linear-attention form when the kernel is frozen (see README.md).
"""

from layers.ops.ttt.parallel import (
    fast_weight_linear_attention,
    initial_fast_state,
    ttt_components,
    ttt_parallel,
    weights_from_state,
)
from layers.ops.ttt.retention import retain
from layers.ops.ttt.sequential import ttt_apply, ttt_chunk_step, ttt_sequential
from layers.ops.ttt.swiglu import FastWeights, inner_loss, inner_loss_updates, newton_schulz

__all__ = [
    "FastWeights",
    "fast_weight_linear_attention",
    "initial_fast_state",
    "inner_loss",
    "inner_loss_updates",
    "newton_schulz",
    "retain",
    "ttt_apply",
    "ttt_chunk_step",
    "ttt_components",
    "ttt_parallel",
    "ttt_sequential",
    "weights_from_state",
]
