"""Gated delta rule with per-channel decay: the chunked torch form (same function as the loop).

Inside a chunk with entering state ``S_n`` and in-chunk cumulative log-decay ``G``, the pseudo-values
``u_t = beta_t (v_t - S~_t^T k_t)`` satisfy a unit lower-triangular system (the WY form of the delta
rule)::

    u_t + beta_t sum_{s < t} [(k_t exp(G_t - G_s)) . k_s] u_s = beta_t (v_t - (k_t exp(G_t))^T S_n)

so ``U = W_v - W_k S_n`` with ``W_v = T^-1 diag(beta) V`` and ``W_k = T^-1 diag(beta) (K exp G)``, solved
once per chunk (``torch.linalg.solve_triangular``). Then, exactly as for GLA with values ``U``,

    o_t     = scale [(q_t exp G_t)^T S_n + sum_{s <= t} ((q_t exp(G_t - G_s)) . k_s) u_s]
    S_{n+1} = exp(G_last) S_n + (K exp(G_last - G))^T U

The decayed score matrices come from :func:`layers.ops.gla.chunk.intra_chunk_scores` (recursive
halving, every exponent <= 0). Gradients come from autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layers.ops.gated_delta.naive import check_gated_delta_inputs
from layers.ops.gla.chunk import check_chunk_size, intra_chunk_scores
from layers.ops.gla.naive import compute_dtype_for, resolve_scale


def chunk_gated_delta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule, chunked form (same arguments and result as ``naive_recurrent_gated_delta``).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; g: log-decay [B, T, H, K] (<= 0);
        beta: write strength [B, T, H] in [0, 1].
        scale: factor on the output; None means ``K ** -0.5``.
        initial_state: [B, H, K, V] or None (zeros).
        output_final_state: also return the state after the last token.
        chunk_size: tokens per chunk, a power of two (any T: the last chunk is padded).

    Returns:
        ``(o [B, T, H, V] in q.dtype, final_state [B, H, K, V] float32 (float64 for float64 inputs)
        or None)``; gradients flow to q, k, v, g, beta and initial_state.

    Example:
        >>> q = k = torch.nn.functional.normalize(torch.randn(1, 100, 2, 16), dim=-1)
        >>> v = torch.randn(1, 100, 2, 16); g = -torch.rand(1, 100, 2, 16) / 8; beta = torch.rand(1, 100, 2)
        >>> o, s = chunk_gated_delta(q, k, v, g, beta, output_final_state=True)
        >>> o.shape
        torch.Size([1, 100, 2, 16])
    """
    check_gated_delta_inputs(q, k, v, g, beta, initial_state)
    check_chunk_size(chunk_size)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    cdt = compute_dtype_for(q.dtype)
    state = q.new_zeros(B, H, K, V, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    if T == 0:
        return q.new_zeros(B, 0, H, V), (state if output_final_state else None)
    C = min(chunk_size, 1 << (T - 1).bit_length())
    N = math.ceil(T / C)

    def to_chunks(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, H, N, C, D], zero padded
        x = F.pad(x.to(cdt), (0, 0, 0, 0, 0, N * C - T))
        return x.view(B, N, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4)

    qc, kc, vc, gc = to_chunks(q), to_chunks(k), to_chunks(v), to_chunks(g)
    bc = to_chunks(beta.unsqueeze(-1))  # [B, H, N, C, 1]; padded tokens write nothing
    G = gc.cumsum(dim=3)
    to_end = F.pad(gc.flip(3).cumsum(3).flip(3)[:, :, :, 1:], (0, 0, 0, 1))  # sum of g after t (see GLA)
    eye = torch.eye(C, dtype=cdt, device=q.device)
    tri = eye + bc * intra_chunk_scores(kc, kc, G, strict=True)  # unit lower triangular [B, H, N, C, C]
    w_v = torch.linalg.solve_triangular(tri, bc * vc, upper=False, unitriangular=True)
    w_k = torch.linalg.solve_triangular(tri, bc * kc * torch.exp(G), upper=False, unitriangular=True)
    scores = intra_chunk_scores(qc, kc, G, strict=False)
    q_read = qc * torch.exp(G)
    k_write = kc * torch.exp(to_end)
    decay_chunk = torch.exp(G[:, :, :, -1]).unsqueeze(-1)  # [B, H, N, K, 1]
    outputs = []
    for n in range(N):
        u = w_v[:, :, n] - w_k[:, :, n] @ state  # [B, H, C, V]
        outputs.append(q_read[:, :, n] @ state + scores[:, :, n] @ u)
        state = decay_chunk[:, :, n] * state + k_write[:, :, n].transpose(-1, -2) @ u
    o = scale * torch.stack(outputs, dim=2)  # [B, H, N, C, V]
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, V)[:, :T]
    return o.to(q.dtype), (state if output_final_state else None)
