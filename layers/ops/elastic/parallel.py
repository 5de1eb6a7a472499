"""Elastic TTT with static importance, in parallel (linear-attention) form.

With the kernel frozen and ``F`` static per hidden unit, the pair (fast weight, anchor) evolves by
a fixed 2x2 linear map per row whose eigenvalues are 1 and ``rho = beta (1 - lam F)``; retention
gamma (:mod:`layers.ops.ttt.retention`) scales both deviations from w1_0 after every chunk, so

    W_c = w1_0 + sum_{j<=c} (a gamma^n + b (gamma rho)^n) U_j          n = c - j + 1
    a = (1 - beta)(1 - lam F) / (1 - rho)         b = lam F / (1 - rho)

(derivation in README.md beside this file): a long memory (persistent when gamma = 1) plus one
decaying by gamma rho at each chunk boundary, computed as one block-causal linear attention by
:func:`layers.ops.ttt.parallel.fast_weight_linear_attention`.
"""

from __future__ import annotations

import torch

from layers.ops.elastic.sequential import check_elastic_args
from layers.ops.ttt.checks import check_fast_weight_args, compute_dtype
from layers.ops.ttt.parallel import Components, fast_weight_linear_attention
from layers.ops.ttt.retention import check_retention, retention_table
from layers.ops.ttt.swiglu import sequence_features


def elastic_decay(lam, F: torch.Tensor, beta) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two-component kernel ``(a, b, rho)`` [H, Dh] of elastic TTT (differentiable in all inputs).

    Args:
        lam: scalar (float or 0-d tensor); F: [H, Dh]; beta: scalar. ``lam * F`` in (0, 1], beta in [0, 1).

    Returns:
        a = (1 - beta)(1 - lam F) / (1 - rho), b = lam F / (1 - rho), rho = beta (1 - lam F).
    """
    lam_f = lam * F
    rho = beta * (1.0 - lam_f)
    one_minus_rho = 1.0 - rho
    return (1.0 - beta) * (1.0 - lam_f) / one_minus_rho, lam_f / one_minus_rho, rho


def elastic_components(lam, F: torch.Tensor, beta, retention: torch.Tensor | None = None) -> Components:
    """The kernel of elastic TTT for :func:`fast_weight_linear_attention`: ``((a, gamma), (b, gamma rho))``.

    Args:
        lam, F, beta: as in :func:`elastic_decay`; retention: gamma [H, Dh] or None (= 1).
    """
    a, b, rho = elastic_decay(lam, F, beta)
    gamma = torch.ones_like(rho) if retention is None else retention.to(rho)
    return (a, gamma), (b, gamma * rho)


def elastic_parallel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    w0: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    chunk_size: int,
    lam,
    F: torch.Tensor,
    beta,
    inclusive: bool = False,
    retention=None,
) -> torch.Tensor:
    """Elastic TTT (static F, frozen kernel, EMA anchor) in parallel form; equals ``elastic_sequential``.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; eta: [B, T, H].
        w0, w2: frozen kernel [B, H, K, Dh]; w1: initial fast weight and anchor [B, H, Dh, V].
        chunk_size: tokens per update (>= 1).
        lam: scalar; F: importance [H, Dh]; lam * F must lie in (0, 1]. beta: in [0, 1).
        inclusive: chunk c reads the weights after its own update and consolidation.
        retention: None (1) or gamma in (0, 1], a scalar or [H, Dh]: after each chunk the fast
            weight and the anchor move to ``w1_0 + gamma (X - w1_0)``.

    Returns:
        o [B, T, H, V] in q's dtype.

    Example:
        >>> B, T, H, K, Dh = 1, 10, 2, 8, 16
        >>> q, k, v = (torch.randn(B, T, H, K) for _ in range(3))
        >>> eta = torch.rand(B, T, H)
        >>> w0, w2, w1 = torch.randn(B, H, K, Dh), torch.randn(B, H, K, Dh), torch.randn(B, H, Dh, K)
        >>> o = elastic_parallel(q, k, v, eta, w0, w1, w2, 4, lam=0.5, F=torch.rand(H, Dh), beta=0.9)
    """
    op = "elastic_parallel"
    dims = check_fast_weight_args(op, q, k, v, eta, w0, w1, w2, chunk_size)
    check_elastic_args(op, lam, F, beta, dims["H"], dims["Dh"])
    check_retention(op, retention, dims["H"], dims["Dh"])
    dtype = compute_dtype(q, k, v, eta, w0, w1, w2)
    w0c, w2c = w0.to(dtype), w2.to(dtype)
    phq, phk = sequence_features(q.to(dtype), w0c, w2c), sequence_features(k.to(dtype), w0c, w2c)
    ve = eta.to(dtype).unsqueeze(-1) * v.to(dtype)
    as_scalar = lambda x: torch.as_tensor(x, dtype=dtype, device=q.device)
    gamma = retention_table(retention, dims["H"], dims["Dh"], phq)
    components = elastic_components(as_scalar(lam), F.to(dtype), as_scalar(beta), gamma)
    o, _ = fast_weight_linear_attention(
        phq, phk, ve, w1.to(dtype), chunk_size, inclusive=inclusive, components=components
    )
    return o.to(q.dtype)
