"""A bound for activations' arguments that never goes flat: log tails beyond the range.

A hard ``clamp`` before ``exp`` guards against overflow, but where it binds its gradient is zero:
a head whose log-output is pushed past the bound (one bad step can do it) gets no gradient from any
loss on that output and stays there for good. This is how the seed-0 ``ttt_lact`` ablation retrain
of session 13 ended with a constant depth map (its log-depth at 1e3-1e5 everywhere, so
``exp(clamp(z, -12, 12))`` was the same number at every pixel; ``docs/memory_ablation.md``).

:func:`log_tail_clamp` is the identity on ``[lo, hi]`` and continues it beyond with log tails,
``hi + log1p(x - hi)`` above and ``lo - log1p(lo - x)`` below: continuous with a continuous
slope (1 at the bounds, ``1 / (1 + excess)`` beyond), strictly increasing up to the guard, so the
output keeps an order and a gradient a loss can act on, while ``exp`` of it stays finite
(``exp(hi) * (1 + excess)``; a last hard clamp at ``|y| <= 80`` guards float32 against an excess
over about 1e29). Inside the
range value and gradient equal the plain clamp's, so a run that never leaves it is bit-identical.
(A straight-through clamp, the plain clamp's value with the identity's gradient, was tried and
does not revive a dead head: the value does not move, so the loss keeps pushing the same way and
the log-depth of the dead ``ttt_lact`` model grew from 1e5 to 2e6 in 40 fine-tuning steps.)
"""

from __future__ import annotations

import torch

_FLOAT32_GUARD = 80.0   # exp(80) ~ 5.5e34 < float32 max 3.4e38


def log_tail_clamp(x: torch.Tensor, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """``x`` on ``[lo, hi]``, log tails beyond (see the module docstring); any shape, float dtype.

    Args:
        x: the log-domain value (e.g. a head's raw log-depth).
        lo, hi: the bounds; ``None`` leaves that side open (up to the float32 guard).

    Returns:
        Tensor like ``x``, within ``[-80, 80]``; strictly increasing in ``x`` short of that guard
        (which binds only for an excess over about 1e29).
    """
    y = x
    if hi is not None:
        above = (x - hi).clamp_min(0.0)             # >= 0, so log1p never sees a negative
        y = torch.where(x > hi, hi + torch.log1p(above), y)
    if lo is not None:
        below = (lo - x).clamp_min(0.0)
        y = torch.where(x < lo, lo - torch.log1p(below), y)
    return y.clamp(-_FLOAT32_GUARD, _FLOAT32_GUARD)
