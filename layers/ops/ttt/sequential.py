"""Sequential TTT (LaCT-style): one SwiGLU fast-weight step per chunk, the reference of every form.

This is the original test-time-training recurrence and supports every option: updating the
hidden (kernel) weights w0/w2 through a hand-written SwiGLU backward, momentum, Muon
(Newton-Schulz) on the step, and LaCT's weight norm. With none of them (kernel frozen, plain step)
it equals :func:`layers.ops.ttt.ttt_parallel` exactly (Thm 5.2 of arXiv 2602.21204).
"""

from __future__ import annotations

import torch

from layers.ops.ttt.checks import check_fast_weight_args, chunk_bounds, compute_dtype, head_first
from layers.ops.ttt.retention import check_retention, retain, retention_table
from layers.ops.ttt.swiglu import (
    FastWeights,
    apply_updates,
    column_norms,
    fast_weight_read,
    inner_loss_updates,
)


def check_optimizer_args(op: str, muon_steps: int, momentum: float) -> None:
    """``muon_steps`` an int >= 0 and ``momentum`` in [0, 1), else ValueError naming the argument."""
    if isinstance(muon_steps, bool) or not isinstance(muon_steps, int) or muon_steps < 0:
        raise ValueError(f"{op}: muon_steps must be an int >= 0, got {muon_steps!r}")
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"{op}: momentum must be in [0, 1), got {momentum!r}")


def ttt_chunk_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    weights: FastWeights,
    *,
    inclusive: bool = False,
    update_hidden: bool = False,
    muon_steps: int = 0,
    momentum: float = 0.0,
    norm_targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    retention: torch.Tensor | None = None,
    origin: FastWeights | None = None,
) -> tuple[torch.Tensor, FastWeights]:
    """Read and update the fast weights for one chunk (head-first layout, compute dtype).

    Args:
        q, k: [B, H, N, K]; v: [B, H, N, V]; eta: [B, H, N] (the chunk's N tokens).
        weights: fast weights before the chunk.
        inclusive: read after this chunk's update (else before: LaCT's apply-then-update).
        update_hidden: also step w0 and w2.
        muon_steps, momentum: see :func:`layers.ops.ttt.swiglu.apply_updates`.
        norm_targets: column norms (w0, w1, w2) to renormalise to after the step (weight norm),
            or None.
        retention: gamma [H, Dh] or None: after the step (and weight norm), every updated weight
            moves to ``origin + gamma (W - origin)`` (:mod:`layers.ops.ttt.retention`).
        origin: the initial fast weights (needed with ``retention``).

    Returns:
        (o [B, H, N, V], fast weights after the chunk).
    """
    if not inclusive:
        o = fast_weight_read(q, weights)
    updates = inner_loss_updates(k, v, eta, weights, update_hidden)
    weights = ttt_apply(weights, updates, update_hidden=update_hidden, muon_steps=muon_steps,
                        momentum=momentum, norm_targets=norm_targets, retention=retention, origin=origin)
    if inclusive:
        o = fast_weight_read(q, weights)
    return o, weights


def ttt_apply(
    weights: FastWeights,
    updates: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None],
    *,
    update_hidden: bool = False,
    muon_steps: int = 0,
    momentum: float = 0.0,
    norm_targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    retention: torch.Tensor | None = None,
    origin: FastWeights | None = None,
) -> FastWeights:
    """The optimizer part of :func:`ttt_chunk_step`: one step with given updates (the negative
    gradients of a chunk's inner loss, :func:`layers.ops.ttt.swiglu.inner_loss_updates`), then
    retention. A chunk that spans several frames sums its frames' updates, all taken at the same
    weights, and applies them here once."""
    weights = apply_updates(
        weights, updates, momentum=momentum, muon_steps=muon_steps, norm_targets=norm_targets
    )
    if retention is not None:
        if origin is None:
            raise ValueError("ttt_chunk_step: retention needs the initial fast weights (origin)")
        weights = retain(weights, origin, retention, update_hidden)
    return weights


def ttt_sequential(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    w0: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    chunk_size: int,
    inclusive: bool = False,
    update_hidden: bool = False,
    weight_norm: bool = False,
    muon_steps: int = 0,
    momentum: float = 0.0,
    retention=None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """TTT with a SwiGLU fast weight, one gradient step of the LaCT inner loss per chunk.

    Args:
        q, k: queries / keys [B, T, H, K]; v: values [B, T, H, V].
        eta: per-token learning rates [B, T, H] (>= 0; the layer uses a softplus).
        w0, w2: initial fast kernel weights [B, H, K, Dh]; w1: initial output weight [B, H, Dh, V].
        chunk_size: tokens per update (>= 1; T need not be a multiple).
        inclusive: tokens of chunk c read the weights after chunk c's update (else after c-1).
        update_hidden: also update w0 and w2 (otherwise the kernel is frozen).
        weight_norm: after each step rescale every column of each updated weight to its initial
            norm (LaCT).
        muon_steps: Newton-Schulz iterations applied to each step (0 = plain gradient step).
        momentum: heavy-ball coefficient in [0, 1) on the steps (0 = none).
        retention: None (1) or gamma in (0, 1], a scalar or [H, Dh]: after each step every updated
            weight moves to ``W_0 + gamma (W - W_0)``, toward its initial value.

    Returns:
        (o [B, T, H, V] in q's dtype, (w0, w1, w2) after the last chunk, in the compute dtype:
        float64 for float64 inputs, else float32).

    Example:
        >>> B, T, H, K, Dh = 1, 10, 2, 8, 16
        >>> q, k, v = (torch.randn(B, T, H, K) for _ in range(3))
        >>> eta = torch.rand(B, T, H)
        >>> w0, w2 = torch.randn(B, H, K, Dh), torch.randn(B, H, K, Dh)
        >>> w1 = torch.randn(B, H, Dh, K)
        >>> o, (w0n, w1n, w2n) = ttt_sequential(q, k, v, eta, w0, w1, w2, chunk_size=4)
        >>> o.shape
        torch.Size([1, 10, 2, 8])
    """
    op = "ttt_sequential"
    dims = check_fast_weight_args(op, q, k, v, eta, w0, w1, w2, chunk_size)
    check_optimizer_args(op, muon_steps, momentum)
    check_retention(op, retention, dims["H"], dims["Dh"])
    dtype = compute_dtype(q, k, v, eta, w0, w1, w2)
    qh, kh, vh, etah = (head_first(t, dtype) for t in (q, k, v, eta))
    weights = FastWeights(w0.to(dtype), w1.to(dtype), w2.to(dtype))
    origin, gamma = weights, retention_table(retention, dims["H"], dims["Dh"], weights.w1)
    targets = None
    if weight_norm:
        targets = tuple(column_norms(w) for w in (weights.w0, weights.w1, weights.w2))
    outs = []
    for s, e in chunk_bounds(dims["T"], chunk_size):
        o_c, weights = ttt_chunk_step(
            qh[:, :, s:e],
            kh[:, :, s:e],
            vh[:, :, s:e],
            etah[:, :, s:e],
            weights,
            inclusive=inclusive,
            update_hidden=update_hidden,
            muon_steps=muon_steps,
            momentum=momentum,
            norm_targets=targets,
            retention=gamma,
            origin=origin,
        )
        outs.append(o_c)
    o = torch.cat(outs, dim=2).transpose(1, 2).to(q.dtype)
    return o, (weights.w0, weights.w1, weights.w2)
