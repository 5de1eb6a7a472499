"""TTT with a frozen kernel as block-causal linear attention (Thm 5.2 / 5.3 of arXiv 2602.21204).

With only w1 updated (kernel ``phi(x) = silu(x w0) * (x w2)`` frozen) and no weight norm or Muon,
the sequential TTT output is exactly

    O = phi(Q) w1_0 + ((phi(Q) phi(K)^T) * M) (eta * V)      M[i, j] = [chunk(j) < chunk(i)]  strict
                                                                       [chunk(j) <= chunk(i)] inclusive

i.e. linear attention with feature map phi and a block-causal mask, which
:func:`layers.ops.block_la.chunk_block_la` computes with states at chunk boundaries (never a
T x T matrix; the state is the fast weight itself, starting at w1_0).

Momentum ``m_c = mu m_{c-1} + U_c`` only reweights past chunks,
``W_c = w1_0 + sum_{j<=c} (1 - mu^(c-j+1)) / (1 - mu) U_j``, so it stays parallel: the same
two-component kernel (a persistent part and a part decaying at chunk boundaries) as elastic TTT,
both computed by :func:`fast_weight_linear_attention`.
"""

from __future__ import annotations

import torch

from layers.ops.block_la import chunk_block_la
from layers.ops.ttt.checks import check_fast_weight_args, compute_dtype
from layers.ops.ttt.sequential import check_optimizer_args
from layers.ops.ttt.swiglu import sequence_features

LOG_DECAY_FLOOR = -30.0
"""Smallest per-chunk log-decay passed to block_la (rho = 0 becomes exp(-30) ~ 1e-13, and the keys
of the decaying part are scaled by the true rho, so a state that rho zeroes stays exactly zero)."""


def fast_weight_linear_attention(
    phq: torch.Tensor,
    phk: torch.Tensor,
    ve: torch.Tensor,
    w1_0: torch.Tensor,
    chunk_size: int,
    *,
    inclusive: bool = False,
    decay: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read fast weights that are linear in the chunk updates ``U_j = phk_j^T ve_j``, in parallel.

    ``decay=None``: ``W_c = w1_0 + sum_{j<=c} U_j`` (plain TTT): one block-causal linear attention
    whose state is W itself (initial state w1_0). ``decay=(a, b, rho)``, each [H, Dh] (per hidden
    unit = key channel): ``W_c = w1_0 + sum_{j<=c} (a + b rho^(c-j+1)) U_j``, as one block-causal
    linear attention with the key dim doubled: keys ``[a phk, b rho phk]``, queries
    ``[phq, phq]``, per-channel log-decay ``[0, log rho]`` at every chunk boundary. The state is then
    ``[Wp; Wd]`` with ``Wp_c = w1_0 + a sum_{j<=c} U_j`` (persistent) and
    ``Wd_c = rho (Wd_{c-1} + b U_c)`` (decaying), and ``W = Wp + Wd`` (per-channel factors commute
    between keys and queries, so they sit on the keys and w1_0 enters as the initial state: no
    separate ``phq w1_0`` product).

    Args:
        phq, phk: kernel features of queries / keys [B, T, H, Dh]; ve: ``eta * v`` [B, T, H, V].
        w1_0: initial output weight [B, H, Dh, V] (used only when ``initial_state`` is None).
        chunk_size: tokens per update.
        inclusive: chunk c reads W_c (else W_{c-1}).
        decay: None or (a, b, rho) [H, Dh], rho in [0, 1).
        initial_state: the state before the first token ([B, H, Dh, V] for decay=None, else
            [B, H, 2 Dh, V]); None = the state of ``w1_0`` (:func:`initial_fast_state`).
        output_final_state: also return the state after the last chunk.

    Returns:
        (o [B, T, H, V] in phq's dtype, state or None). The weights after the last chunk are
        :func:`weights_from_state` of the state.
    """
    if initial_state is None:
        initial_state = initial_fast_state(w1_0, decay is not None)
    if decay is None:
        q2, k2, g = phq, phk, None
    else:
        a, b, rho = decay
        B, T, H, Dh = phq.shape
        log_rho = torch.log(rho).clamp_min(LOG_DECAY_FLOOR)
        g = torch.cat([torch.zeros_like(log_rho), log_rho], dim=-1).to(phq.dtype)
        g = g.expand(B, -(-T // chunk_size), H, 2 * Dh)
        q2 = torch.cat([phq, phq], dim=-1)
        k2 = torch.cat([phk * a, phk * (b * rho)], dim=-1)
    return chunk_block_la(
        q2,
        k2,
        ve,
        g,
        block_size=chunk_size,
        inclusive=inclusive,
        initial_state=initial_state,
        output_final_state=output_final_state,
    )


def initial_fast_state(w1_0: torch.Tensor, two_component: bool) -> torch.Tensor:
    """The state of :func:`fast_weight_linear_attention` for the weight ``w1_0`` [..., Dh, V]:
    ``w1_0`` itself, or ``[w1_0; 0]`` [..., 2 Dh, V] for the two-component (decay) form."""
    return torch.cat([w1_0, torch.zeros_like(w1_0)], dim=-2) if two_component else w1_0


def weights_from_state(state: torch.Tensor, two_component: bool) -> torch.Tensor:
    """The fast weight [B, H, Dh, V] from a state: itself, or ``Wp + Wd`` for the two-component form."""
    if not two_component:
        return state
    Dh = state.shape[-2] // 2
    return state[..., :Dh, :] + state[..., Dh:, :]


def momentum_decay(momentum: float, num_heads: int, hidden: int, like: torch.Tensor):
    """(a, b, rho) [H, Dh] of heavy-ball momentum: ``(1 - mu^n) / (1 - mu) = a + b mu^n``."""
    full = lambda value: torch.full((num_heads, hidden), value, dtype=like.dtype, device=like.device)
    return full(1.0 / (1.0 - momentum)), full(-1.0 / (1.0 - momentum)), full(momentum)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """TTT with a frozen SwiGLU kernel in parallel form; equals ``ttt_sequential`` with
    ``update_hidden=False, weight_norm=False, muon_steps=0`` (and the same momentum).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; eta: [B, T, H].
        w0, w2: frozen kernel [B, H, K, Dh]; w1: initial output weight [B, H, Dh, V].
        chunk_size: tokens per update (>= 1; T need not be a multiple).
        inclusive: chunk c reads the weights after its own update.
        momentum: heavy-ball coefficient in [0, 1).

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
    dtype = compute_dtype(q, k, v, eta, w0, w1, w2)
    w0c, w2c = w0.to(dtype), w2.to(dtype)
    phq, phk = sequence_features(q.to(dtype), w0c, w2c), sequence_features(k.to(dtype), w0c, w2c)
    ve = eta.to(dtype).unsqueeze(-1) * v.to(dtype)
    decay = None if momentum == 0.0 else momentum_decay(momentum, dims["H"], dims["Dh"], phq)
    o, state = fast_weight_linear_attention(
        phq, phk, ve, w1.to(dtype), chunk_size, inclusive=inclusive, decay=decay, output_final_state=True
    )
    return o.to(q.dtype), weights_from_state(state, decay is not None)
