"""TTT memory (LaCT-style SwiGLU fast weights), one fast-weight update per chunk of frames.

A :class:`layers.fast_weight.FastWeightMemory`: per-head queries, keys (L2-normalised), values and
a per-token learning rate ``eta = softplus(W_eta x + b)`` (float32); the fast weight
``f(x) = (silu(x w0) * (x w2)) w1`` of every head takes one step of the LaCT dot-product inner
loss per frame (:mod:`layers.ops.ttt`), and the read-out ``f(q)`` goes through a per-head RMSNorm
and an output projection. The initial fast weights are learned (slow) parameters.

LaCT is a large-chunk method (thousands of tokens per update): ``chunk_frames = n`` makes one update
span n frames (sequential form; every frame of a chunk reads the weights of the previous chunks,
:mod:`layers.fast_weight`). The LaCT arm of the memory ablation is the default sequential form
(hidden update, Muon 5, weight norm) with ``chunk_frames > 1``.

Two forms (the base's ``form`` switch):
- ``form="sequential"`` (default): the original recurrence, with every LaCT option (update of the
  hidden weights, Muon, weight norm, momentum); the cache holds the fast weights.
- ``form="parallel"``: frozen kernel (no update_hidden / Muon / weight norm), computed as
  block-causal linear attention over the whole clip; the cache holds the deviation of w1 from the
  slow weight (fixed size [B, H, Dh, V], or its two parts [B, H, 2 Dh, V] with momentum).

Retention (:mod:`layers.ops.ttt.retention`): after every update the fast weights relax toward the
slow weights, ``W <- W_0 + gamma (W - W_0)`` with a learned gamma per head and hidden unit, so the
state stays bounded over any stream. On by default in the parallel form (which has nothing else
bounding it); off by default in the sequential form, whose weight norm bounds it (faithful LaCT).
"""

from __future__ import annotations

import torch

from layers.fast_weight import DEFAULT_RETENTION_FRAMES, FastWeightMemory, LearnedRetention
from layers.ops.ttt.parallel import ttt_components
from layers.ops.ttt.sequential import check_optimizer_args, ttt_apply
from layers.ops.ttt.swiglu import FastWeights, column_norms


class TTTMemory(FastWeightMemory):
    """LaCT-style test-time-training memory with one SwiGLU fast-weight step per frame.

    Args:
        dim: token width C.
        num_heads: heads H (C divisible by H).
        form: ``"sequential"`` (all options) or ``"parallel"`` (frozen kernel, linear attention).
        hidden_ratio: fast hidden width Dh = hidden_ratio * C / H.
        base_lr: initial per-token learning rate.
        inclusive: a frame reads the fast weights after its own update (else before: LaCT).
        update_hidden: also update w0 / w2 (sequential only).
        weight_norm: keep every fast-weight column at the norm of the slow weight (sequential only).
        muon_steps: Newton-Schulz iterations on each step, 0 = off (sequential only).
        momentum: heavy-ball coefficient in [0, 1) on the steps.
        retention_frames: initial horizons (shortest, longest), in frames, of the learned retention
            (:class:`LearnedRetention`); None = no retention; ``"auto"`` = (8, 512) in the parallel
            form, None in the sequential form.
        chunk_frames: frames per fast-weight update (>= 1; > 1 needs the sequential form and
            ``inclusive=False``).

    Example:
        >>> layer = TTTMemory(32, 2)
        >>> y, cache = layer(torch.randn(1, 3, 5, 32))     # 3 frames of 5 tokens
        >>> y.shape
        torch.Size([1, 3, 5, 32])
    """

    name = "TTTMemory"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        form: str = "sequential",
        hidden_ratio: float = 2.0,
        base_lr: float = 1e-2,
        inclusive: bool = False,
        update_hidden: bool = True,
        weight_norm: bool = True,
        muon_steps: int = 5,
        momentum: float = 0.0,
        retention_frames: tuple[float, float] | None | str = "auto",
        chunk_frames: int = 1,
    ) -> None:
        super().__init__(dim, num_heads, form, hidden_ratio, base_lr, inclusive, chunk_frames)
        name = self.name
        check_optimizer_args(name, muon_steps, momentum)
        if form == "parallel" and (update_hidden or weight_norm or muon_steps):
            raise ValueError(
                f"{name}: form='parallel' needs a frozen kernel and a plain step: set update_hidden=False, "
                f"weight_norm=False, muon_steps=0 (got {update_hidden}, {weight_norm}, {muon_steps})"
            )
        self.update_hidden, self.weight_norm = update_hidden, weight_norm
        self.muon_steps, self.momentum = muon_steps, momentum
        if retention_frames == "auto":
            retention_frames = DEFAULT_RETENTION_FRAMES if form == "parallel" else None
        if retention_frames is not None:
            # gamma > momentum: needed by the parallel form, kept in both so weights move between forms
            self.retention = LearnedRetention(num_heads, self.io.hidden, retention_frames, name, momentum)

    def parallel_parts(self) -> int:
        return 2 if self.momentum > 0 else 1

    def components(self, phq: torch.Tensor):
        return ttt_components(self.gamma(), self.momentum, self.io.num_heads, self.io.hidden, phq)

    def initial_recurrent(self, slow: FastWeights, device) -> FastWeights:
        return FastWeights(*(w.to(device).clone() for w in (slow.w0, slow.w1, slow.w2)))

    def sequence_context(self, batch_size: int) -> dict:
        targets = None
        if self.weight_norm:
            targets = tuple(
                column_norms(w.float()).unsqueeze(0) for w in (self.io.w0, self.io.w1, self.io.w2)
            )
        return {**super().sequence_context(batch_size), "norm_targets": targets}

    def weights_of(self, recurrent: FastWeights) -> FastWeights:
        return recurrent

    def apply(self, updates, recurrent, context):
        return ttt_apply(
            recurrent,
            updates,
            update_hidden=self.update_hidden,
            muon_steps=self.muon_steps,
            momentum=self.momentum,
            norm_targets=context["norm_targets"],
            retention=context["gamma"],
            origin=context["origin"],
        )
