"""Clamps for activations' arguments that bound the forward value and keep the gradient.

A hard ``clamp`` before ``exp`` guards against overflow, but where it binds its gradient is zero:
a head whose log-output is pushed past the bound (one bad step can do it) gets no gradient from any
loss on that output and stays there for good. This is how the seed-0 ``ttt_lact`` ablation retrain
of session 13 ended with a constant depth map (its log-depth at 1e3-1e5 everywhere, so
``exp(clamp(z, -12, 12))`` was the same number at every pixel; ``docs/memory_ablation.md``).

:func:`clamp_keep_grad` returns exactly ``x.clamp(lo, hi)`` and passes the incoming gradient to
``x`` unchanged (a straight-through clamp), so a loss can pull a saturated output back into range.
Where the bound does not bind, value and gradient equal the plain clamp's: training runs that never
saturate are bit-identical to the plain clamp.
"""

from __future__ import annotations

import torch


class _ClampKeepGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


def clamp_keep_grad(x: torch.Tensor, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """``x.clamp(lo, hi)`` in value; identity in gradient (any shape and float dtype)."""
    return _ClampKeepGrad.apply(x, lo, hi)
