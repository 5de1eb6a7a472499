"""TTT with a frozen kernel as block-causal linear attention (Thm 5.2 / 5.3 of arXiv 2602.21204).

With only w1 updated (kernel ``phi(x) = silu(x w0) * (x w2)`` frozen) and no weight norm or Muon,
the sequential TTT output is exactly

    O = phi(Q) w1_0 + ((phi(Q) phi(K)^T) * M) (eta * V)      M[i, j] = [chunk(j) < chunk(i)]  strict
                                                                       [chunk(j) <= chunk(i)] inclusive

i.e. linear attention with feature map phi and a block-causal mask, which
:func:`layers.ops.block_la.chunk_block_la` computes with states at chunk boundaries (never a
T x T matrix; the state is the deviation of the fast weight from w1_0).

Momentum ``m_c = mu m_{c-1} + U_c`` and retention ``W - w1_0 <- gamma (W - w1_0)``
(:mod:`layers.ops.ttt.retention`) only reweight past chunks,
``W_c = w1_0 + sum_{j<=c} gamma (gamma^n - mu^n) / (gamma - mu) U_j`` with ``n = c - j + 1``, so
they stay parallel: a kernel of exponentially decaying components per hidden unit, as for elastic
TTT, all computed by :func:`fast_weight_linear_attention`.
"""

from __future__ import annotations

import torch

from layers.ops.block_la import chunk_block_la
from layers.ops.ttt.checks import check_fast_weight_args, compute_dtype
from layers.ops.ttt.retention import check_retention, retention_table
from layers.ops.ttt.sequential import check_optimizer_args
from layers.ops.ttt.swiglu import sequence_features

LOG_DECAY_FLOOR = -30.0
"""Smallest per-chunk log-decay passed to block_la (rho = 0 becomes exp(-30) ~ 1e-13, and the keys
of the decaying part are scaled by the true rho, so a state that rho zeroes stays exactly zero)."""


Components = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Kernel of a fast weight that is linear in the chunk updates: ``((weight_m, rho_m), ...)``, each
[H, Dh] (per hidden unit), meaning ``W_c = w1_0 + sum_m sum_{j<=c} weight_m rho_m^(c-j+1) U_j``."""


def fast_weight_linear_attention(
    phq: torch.Tensor,
    phk: torch.Tensor,
    ve: torch.Tensor,
    w1_0: torch.Tensor,
    chunk_size: int,
    *,
    inclusive: bool = False,
    components: Components | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read fast weights that are linear in the chunk updates ``U_j = phk_j^T ve_j``, in parallel.

    ``components=None``: ``W_c = w1_0 + sum_{j<=c} U_j`` (plain TTT). Otherwise
    ``W_c = w1_0 + sum_m sum_{j<=c} weight_m rho_m^(c-j+1) U_j`` (retention, momentum, elastic
    consolidation: :func:`ttt_components`, :func:`layers.ops.elastic.elastic_components`), computed
    as one block-causal linear attention with the key dim repeated per component: keys
    ``[weight_m rho_m phk]``, queries ``[phq, ..., phq]``, per-channel log-decay ``[log rho_m]`` at
    every chunk boundary. The state holds the deviation of each component from ``w1_0``,
    ``D_m,c = rho_m (D_m,c-1 + weight_m U_c)`` stacked as [B, H, M Dh, V]; the read is
    ``phq w1_0 + sum_m phq D_m`` (per-channel factors commute between keys and queries, so they
    sit on the keys).

    Args:
        phq, phk: kernel features of queries / keys [B, T, H, Dh]; ve: ``eta * v`` [B, T, H, V].
        w1_0: initial output weight [B, H, Dh, V].
        chunk_size: tokens per update.
        inclusive: chunk c reads W_c (else W_{c-1}).
        components: None or ``((weight, rho), ...)``, each [H, Dh], rho in [0, 1].
        initial_state: the deviations before the first token [B, H, M Dh, V] (M = number of
            components, 1 for None); None = zeros (:func:`initial_fast_state`).
        output_final_state: also return the state after the last chunk.

    Returns:
        (o [B, T, H, V] in phq's dtype, state or None). The weights after the last chunk are
        :func:`weights_from_state` of the state.
    """
    num = 1 if components is None else len(components)
    if initial_state is None:
        initial_state = initial_fast_state(w1_0, num)
    if components is None:
        q2, k2, g = phq, phk, None
    else:
        B, T, H, Dh = phq.shape
        keys = [phk * (weight * rho) for weight, rho in components]
        logs = [torch.log(rho).clamp_min(LOG_DECAY_FLOOR) for _, rho in components]
        g = torch.cat(logs, dim=-1).to(phq.dtype).expand(B, -(-T // chunk_size), H, num * Dh)
        q2, k2 = torch.cat([phq] * num, dim=-1), torch.cat(keys, dim=-1)
    o, state = chunk_block_la(
        q2,
        k2,
        ve,
        g,
        block_size=chunk_size,
        inclusive=inclusive,
        initial_state=initial_state,
        output_final_state=output_final_state,
    )
    return o + torch.einsum("bthd,bhdv->bthv", phq, w1_0.to(phq.dtype)), state


def initial_fast_state(w1_0: torch.Tensor, num_components: int = 1) -> torch.Tensor:
    """The state of :func:`fast_weight_linear_attention` before any update: zero deviations
    [..., M Dh, V] for ``w1_0`` [..., Dh, V]."""
    *batch, Dh, V = w1_0.shape
    return w1_0.new_zeros(*batch, num_components * Dh, V)


def weights_from_state(state: torch.Tensor, w1_0: torch.Tensor) -> torch.Tensor:
    """The fast weight [B, H, Dh, V]: ``w1_0`` plus the deviation of every component in ``state``."""
    Dh = w1_0.shape[-2]
    return w1_0 + state.unflatten(-2, (state.shape[-2] // Dh, Dh)).sum(dim=-3)


def ttt_components(
    retention: torch.Tensor | None, momentum: float, num_heads: int, hidden: int, like: torch.Tensor
) -> Components | None:
    """The kernel of TTT with retention gamma [H, Dh] (None = 1) and heavy-ball momentum mu.

    With ``m_c = mu m_{c-1} + U_c`` and ``W_c - w1_0 = gamma (W_{c-1} - w1_0 + m_c)``, an update
    ``U_j`` weighs ``sum_{s<n} gamma^(n-s) mu^s = gamma (gamma^n - mu^n) / (gamma - mu)`` after
    ``n = c - j + 1`` chunks: components ``(gamma / (gamma - mu), gamma)`` and
    ``(-gamma / (gamma - mu), mu)``; requires mu < gamma, checked by :func:`ttt_parallel` (the
    layers parametrise gamma above mu, so the per-frame path does no check). None when both are off.
    """
    if momentum == 0.0 and retention is None:
        return None
    gamma = torch.ones(num_heads, hidden, dtype=like.dtype, device=like.device)
    if retention is not None:
        gamma = retention.to(like)
    if momentum == 0.0:
        return ((torch.ones_like(gamma), gamma),)
    weight = gamma / (gamma - momentum)
    return ((weight, gamma), (-weight, torch.full_like(gamma, momentum)))


def ttt_parallel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    w0: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    chunk_size: int,
    inclusive: bool = False,
    momentum: float = 0.0,
    retention=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TTT with a frozen SwiGLU kernel in parallel form; equals ``ttt_sequential`` with
    ``update_hidden=False, weight_norm=False, muon_steps=0`` (and the same momentum and retention).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; eta: [B, T, H].
        w0, w2: frozen kernel [B, H, K, Dh]; w1: initial output weight [B, H, Dh, V].
        chunk_size: tokens per update (>= 1; T need not be a multiple).
        inclusive: chunk c reads the weights after its own update.
        momentum: heavy-ball coefficient in [0, 1) (below every retention value).
        retention: None (1) or gamma in (0, 1], a scalar or [H, Dh] (:mod:`layers.ops.ttt.retention`).

    Returns:
        (o [B, T, H, V] in q's dtype, w1 after the last chunk [B, H, Dh, V] in the compute dtype).

    Example:
        >>> B, T, H, K, Dh = 1, 10, 2, 8, 16
        >>> q, k, v = (torch.randn(B, T, H, K) for _ in range(3))
        >>> eta = torch.rand(B, T, H)
        >>> w0, w2, w1 = torch.randn(B, H, K, Dh), torch.randn(B, H, K, Dh), torch.randn(B, H, Dh, K)
        >>> o, w1_final = ttt_parallel(q, k, v, eta, w0, w1, w2, chunk_size=4)
    """
    op = "ttt_parallel"
    dims = check_fast_weight_args(op, q, k, v, eta, w0, w1, w2, chunk_size)
    check_optimizer_args(op, 0, momentum)
    check_retention(op, retention, dims["H"], dims["Dh"])
    dtype = compute_dtype(q, k, v, eta, w0, w1, w2)
    w0c, w1c, w2c = w0.to(dtype), w1.to(dtype), w2.to(dtype)
    phq, phk = sequence_features(q.to(dtype), w0c, w2c), sequence_features(k.to(dtype), w0c, w2c)
    ve = eta.to(dtype).unsqueeze(-1) * v.to(dtype)
    gamma = retention_table(retention, dims["H"], dims["Dh"], phq)
    if momentum > 0.0 and gamma is not None and not bool((gamma.detach() > momentum).all()):
        raise ValueError(
            f"{op}: momentum ({momentum}) must be below every retention value "
            f"(min {gamma.min().item():.4g}); the two decays would coincide"
        )
    components = ttt_components(gamma, momentum, dims["H"], dims["Dh"], phq)
    o, state = fast_weight_linear_attention(
        phq, phk, ve, w1c, chunk_size, inclusive=inclusive, components=components, output_final_state=True
    )
    return o.to(q.dtype), weights_from_state(state, w1c)
