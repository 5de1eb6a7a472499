"""Retention: fast weights relax toward their initial (slow) values, so long streams stay bounded.

Plain TTT keeps the sum of every past update, and elastic TTT keeps a persistent share of it (the
eigenvalue 1 of its consolidation map): their fast weights drift without bound over a long stream.
Retention ``gamma`` in (0, 1] (a scalar or one value per head and hidden unit, ``[H, Dh]``) scales
the deviation of every updated weight (and of the elastic anchor) from its initial value after each
chunk's step:

    X <- X_0 + gamma * (X - X_0)

``gamma = 1`` is the original recurrence. With ``gamma < 1`` a plain TTT update ``U_j`` weighs
``gamma^(c - j + 1)`` in the fast weight after chunk c, so the reduction stays an exact linear
attention, with per-channel log-decay ``log gamma`` at chunk boundaries (README.md beside this file).
The horizon of a channel is about ``1 / (1 - gamma)`` chunks.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from layers.ops.ttt.swiglu import FastWeights


def check_retention(op: str, retention, num_heads: int, hidden: int) -> None:
    """``retention`` is None, a number or a tensor (0-d or [H, Dh]) with values in (0, 1], else ValueError."""
    if retention is None:
        return
    r = torch.as_tensor(retention).detach()
    if r.dim() != 0 and tuple(r.shape) != (num_heads, hidden):
        raise ValueError(
            f"{op}: retention must be a scalar or [H, Dh] = {(num_heads, hidden)}, got shape {tuple(r.shape)}"
        )
    if not bool(((r > 0) & (r <= 1)).all()):
        raise ValueError(
            f"{op}: retention must lie in (0, 1], got range [{r.min().item():.3g}, {r.max().item():.3g}]"
        )


def retention_table(retention, num_heads: int, hidden: int, like: torch.Tensor) -> torch.Tensor | None:
    """Retention as an [H, Dh] tensor with ``like``'s dtype and device (None stays None)."""
    if retention is None:
        return None
    r = torch.as_tensor(retention, dtype=like.dtype, device=like.device)
    return r.expand(num_heads, hidden) if r.dim() == 0 else r.to(like)


def retain(
    weights: FastWeights, origin: FastWeights, retention: torch.Tensor | None, update_hidden: bool
) -> FastWeights:
    """Move every updated weight toward its origin: ``X_0 + gamma (X - X_0)``.

    Args:
        weights, origin: fast weights (w0, w2 [B, H, K, Dh]; w1 [B, H, Dh, V]) and their initial values.
        retention: gamma [H, Dh] per hidden unit (the rows of w1, the columns of w0 / w2), or None
            (nothing changes).
        update_hidden: w0 and w2 are updated too (else they stay as they are).

    Momentum buffers are kept as they are.
    """
    if retention is None:
        return weights
    new = {}
    for i in (0, 1, 2) if update_hidden else (1,):
        name = f"w{i}"
        gamma = per_hidden_unit(retention, i)
        new[name] = retain_tensor(getattr(weights, name), getattr(origin, name), gamma)
    return replace(weights, **new)


def per_hidden_unit(table: torch.Tensor, weight_index: int) -> torch.Tensor:
    """An [H, Dh] table (retention, importance) broadcast against fast weight ``w{weight_index}``:
    the rows of w1 [B, H, Dh, V], the columns of w0 / w2 [B, H, K, Dh]."""
    return table[None, :, :, None] if weight_index == 1 else table[None, :, None, :]


def retain_tensor(x: torch.Tensor, x0: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``x0 + gamma (x - x0)`` (gamma broadcast against x)."""
    return x0 + gamma * (x - x0)
