"""Gated delta rule: the chunked torch form (the CPU path, hand-written backward) and the dispatcher.

Inside a chunk with entering state ``S_n`` and in-chunk cumulative log-decay ``G``, the pseudo-values
``u_t = beta_t (v_t - S~_t^T k_t)`` satisfy a unit lower-triangular system (the WY / UT form of the
delta rule)::

    u_t + beta_t sum_{s < t} [(k_t exp(G_t - G_s)) . k_s] u_s = beta_t (v_t - (k_t exp(G_t))^T S_n)

so ``U = W_v - W_k S_n`` with ``W_v = T^-1 diag(beta) V`` and ``W_k = T^-1 diag(beta) (K exp G)``; ``T^-1``
comes from one ``torch.linalg.solve_triangular`` per chunk. Then, exactly as for GLA with values ``U``,

    o_t     = scale [(q_t exp G_t)^T S_n + sum_{s <= t} ((q_t exp(G_t - G_s)) . k_s) u_s]
    S_{n+1} = exp(G_last) S_n + (K exp(G_last - G))^T U

Two decay layouts: per key channel (``g [B, T, H, K]``; the decayed score matrices by recursive
halving, every exponent <= 0) and per head (``g [B, T, H]``, a scalar per token and head as in
Gated DeltaNet / Qwen3-Next: one C x C decay matrix ``exp(G_t - G_s)``, masked before the exp). The
backward is written by hand (README.md beside this file): a reverse scan over chunks for the state
gradient, then batched matmuls (the transposed solve is a matmul with ``T^-1``) and the decayed pair sums.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layers.ops.gated_delta.naive import check_gated_delta_inputs
from layers.ops.gla.chunk import resolve_backend
from layers.ops.gla.naive import check_chunk_size, compute_dtype_for, resolve_scale


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
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule, chunked form (same arguments and result as ``naive_recurrent_gated_delta``).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        g: log-decay (<= 0), per key channel [B, T, H, K] or per head [B, T, H] (faster).
        beta: write strength [B, T, H] in [0, 1].
        scale: factor on the output; None means ``K ** -0.5``.
        initial_state: [B, H, K, V] or None (zeros).
        output_final_state: also return the state after the last token.
        chunk_size: tokens per chunk, a power of two (any T: the last chunk is padded); the Triton
            backend needs at least 16.
        backend: None (Triton on CUDA tensors, torch otherwise), ``"torch"`` or ``"triton"`` (CUDA,
            or the Triton interpreter when ``TRITON_INTERPRET=1`` was set before import).

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
    scale = resolve_scale(scale, q.shape[-1])
    if resolve_backend("gated_delta", backend, q) == "triton":
        from layers.ops.gated_delta.triton import triton_gated_delta

        return triton_gated_delta(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)
    return torch_chunk_gated_delta(q, k, v, g, beta, scale, initial_state, output_final_state, chunk_size)


def torch_chunk_gated_delta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
    autograd: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch chunked form (inputs checked, scale resolved). ``autograd=True`` differentiates the
    forward by autograd instead of the hand-written backward (kept to measure one against the other:
    tools/bench/bench_gated_delta.py)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    cdt = compute_dtype_for(q.dtype)
    if T == 0:
        state = q.new_zeros(B, H, K, V, dtype=cdt) if initial_state is None else initial_state.to(cdt)
        return q.new_zeros(B, 0, H, V), (state if output_final_state else None)
    C = min(chunk_size, 1 << (T - 1).bit_length())  # no chunk longer than the padded sequence
    with torch.autocast(q.device.type, enabled=False):  # fp32 (fp64) accumulation under autocast too
        if autograd:
            o, state = _forward(q, k, v, g, beta, initial_state, scale, C)[:2]
        else:
            o, state = TorchGatedDeltaFunction.apply(q, k, v, g, beta, initial_state, scale, C)
    return o, (state if output_final_state else None)


def to_chunks(x: torch.Tensor, C: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, H, *D] -> [B * H, N, C, *D] in ``dtype``, zero padded to whole chunks (contiguous)."""
    B, T, H = x.shape[:3]
    N = math.ceil(T / C)
    x = x.to(dtype)
    pad = [0, 0] * (x.dim() - 2) + [0, N * C - T]
    x = F.pad(x, pad).view(B, N, C, H, *x.shape[3:])
    perm = (0, 3, 1, 2) + tuple(range(4, x.dim()))
    return x.permute(perm).reshape(B * H, N, C, *x.shape[4:])


def from_chunks(x: torch.Tensor, B: int, T: int, H: int) -> torch.Tensor:
    """Inverse of :func:`to_chunks`: [B * H, N, C, *D] -> [B, T, H, *D]."""
    _, N, C = x.shape[:3]
    rest = x.shape[3:]
    x = x.reshape(B, H, N * C, *rest)[:, :, :T]
    return x.transpose(1, 2)


def _halves(x: torch.Tensor, h: int) -> torch.Tensor:
    """[BH, N, C, D] -> [BH, N, C / 2h, 2, h, D] (pairs of halves of the blocks of 2h tokens)."""
    BH, N, C = x.shape[:3]
    return x.view(BH, N, C // (2 * h), 2, h, *x.shape[3:])


def _pair_blocks(m: torch.Tensor, h: int) -> torch.Tensor:
    """View of the (second half, first half) blocks of a [BH, N, C, C] matrix: [BH, N, C / 2h, h, h]."""
    BH, N, C, _ = m.shape
    nb = C // (2 * h)
    blocks = m.view(BH, N, nb, 2, h, nb, 2, h)[:, :, :, 1, :, :, 0, :]  # [BH, N, nb, h, nb, h]
    return torch.diagonal(blocks, dim1=2, dim2=4).permute(0, 1, 4, 2, 3)


def _levels(G: torch.Tensor):
    """Per halving level h: (h, exp(G_second - R) [.., nb, h, K] or None (h = 1: all ones),
    exp(R - G_first) [.., nb, h, K]) with R = G at the first token of the second half (every exponent
    <= 0; README.md of layers/ops/gla)."""
    h = G.shape[2] // 2
    while h >= 1:
        G_h = _halves(G, h)
        ref = G_h[:, :, :, 1, :1]
        yield h, ((G_h[:, :, :, 1] - ref).exp_() if h > 1 else None), (ref - G_h[:, :, :, 0]).exp_()
        h //= 2


def _scaled(x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
    return x if e is None else x * e


def _small_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for the batched tiny blocks of the last halving levels, where a batched matmul of
    1 x 1 or 2 x 2 blocks is slower than broadcasting (contraction over 1 or 2 terms)."""
    if a.shape[-1] > 2:
        return a @ b
    out = a[..., :1] * b[..., :1, :]
    for j in range(1, a.shape[-1]):
        out = out + a[..., j:j + 1] * b[..., j:j + 1, :]
    return out


def _small_abt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b^T`` with a, b [.., h, K]; by broadcasting for h <= 2 (see :func:`_small_bmm`)."""
    if a.shape[-2] > 2:
        return a @ b.transpose(-1, -2)
    return (a.unsqueeze(-2) * b.unsqueeze(-3)).sum(-1)


def decayed_scores(rows: tuple[torch.Tensor, ...], b: torch.Tensor, levels: list) -> list[torch.Tensor]:
    """For each row feature ``a`` in ``rows``: ``A[t, s] = sum_k a_tk b_sk exp(G_tk - G_sk)`` for s < t,
    0 elsewhere (the diagonal is left to the caller).

    rows, b: [BH, N, C, K]; levels: ``list(_levels(G))``. Returns [BH, N, C, C] per row feature.
    """
    BH, N, C, _ = b.shape
    outs = [b.new_zeros(BH, N, C, C) for _ in rows]
    for h, e_second, e_first in levels:
        b1 = _halves(b, h)[:, :, :, 0] * e_first
        for a, out in zip(rows, outs, strict=True):
            _pair_blocks(out, h).copy_(_small_abt(_scaled(_halves(a, h)[:, :, :, 1], e_second), b1))
    return outs


def decayed_rows(ds: tuple[torch.Tensor, ...], b: torch.Tensor, levels: list) -> list[torch.Tensor]:
    """``X_t = sum_{s < t} d[t, s] b_s * exp(G_t - G_s)`` (per channel) for each ``d`` in ``ds``: the
    gradient of the row features of decayed score matrices whose gradients are ``ds`` ([BH, N, C, C]
    each) and whose column features are b [BH, N, C, K]."""
    outs = [torch.zeros_like(b) for _ in ds]
    for h, e_second, e_first in levels:
        b1 = _halves(b, h)[:, :, :, 0] * e_first
        for d, out in zip(ds, outs, strict=True):
            _halves(out, h)[:, :, :, 1] += _scaled(_small_bmm(_pair_blocks(d, h), b1), e_second)
    return outs


def decayed_cols(pairs: tuple[tuple[torch.Tensor, torch.Tensor], ...], levels: list) -> torch.Tensor:
    """``Y_s = sum_{(d, a) in pairs} sum_{t > s} d[t, s] a_t * exp(G_t - G_s)``: the summed gradient of
    the column features of decayed score matrices (gradient d, row features a [BH, N, C, K])."""
    out = torch.zeros_like(pairs[0][1])
    for h, e_second, e_first in levels:
        part = sum(_small_bmm(_pair_blocks(d, h).transpose(-1, -2),
                              _scaled(_halves(a, h)[:, :, :, 1], e_second)) for d, a in pairs)
        _halves(out, h)[:, :, :, 0] += part * e_first
    return out


def _forward(q, k, v, g, beta, initial_state, scale, C):
    """The chunked forward. Returns ``(o, final_state, saved)`` (saved: what the backward needs)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    cdt = compute_dtype_for(q.dtype)
    per_head = g.dim() == 3
    qc, kc, vc = (to_chunks(x, C, cdt) for x in (q, k, v))
    bc = to_chunks(beta, C, cdt)  # [BH, N, C]; padded tokens write nothing
    gc = to_chunks(g, C, cdt)  # [BH, N, C] or [BH, N, C, K]
    BH, N = qc.shape[:2]
    G = gc.cumsum(2)
    # Log-decay from after token t to the chunk end as a sum over the later tokens (exactly 0 for
    # the last token, not G_last - G_t; see the decay gradient in README.md).
    to_end = F.pad(gc.flip(2).cumsum(2).flip(2)[:, :, 1:], (0, 0) * (gc.dim() - 3) + (0, 1))
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if per_head:
        e_G, e_end = torch.exp(G).unsqueeze(-1), torch.exp(to_end).unsqueeze(-1)
        decay = torch.exp(G[:, :, -1])[..., None, None]  # [BH, N, 1, 1]
        E = torch.exp(torch.where(causal, G.unsqueeze(-1) - G.unsqueeze(-2), float("-inf")))
        A_qk = (qc @ kc.transpose(-1, -2)) * E
        A_kk = ((kc @ kc.transpose(-1, -2)) * E).tril(-1)
        levels = None
    else:
        e_G, e_end = torch.exp(G), torch.exp(to_end)
        decay = torch.exp(G[:, :, -1]).unsqueeze(-1)  # [BH, N, K, 1]
        levels = list(_levels(G))
        A_qk, A_kk = decayed_scores((qc, kc), kc, levels)
        A_qk.diagonal(dim1=-2, dim2=-1).copy_((qc * kc).sum(-1))  # the pair (t, t): no decay
    b_ = bc.unsqueeze(-1)
    tri = A_kk * b_ + torch.eye(C, dtype=cdt, device=q.device)  # unit lower triangular
    k_read = kc * e_G
    # One solve for the inverse M = T^-1 (unit lower triangular; the backward reuses it), then matmuls.
    eye = torch.eye(C, dtype=cdt, device=q.device).expand_as(tri)
    m_inv = torch.linalg.solve_triangular(tri, eye, upper=False, unitriangular=True)
    w_v, w_k = m_inv @ (b_ * vc), m_inv @ (b_ * k_read)
    k_write = kc * e_end
    k_write_t = k_write.transpose(-1, -2)  # [BH, N, K, C]
    if initial_state is None:
        state = q.new_zeros(BH, K, V, dtype=cdt)
    else:
        state = initial_state.to(cdt).reshape(BH, K, V)
    states, us = [], []
    for n in range(N):
        states.append(state)
        u = torch.baddbmm(w_v[:, n], w_k[:, n], state, alpha=-1)
        us.append(u)
        state = torch.baddbmm(decay[:, n] * state, k_write_t[:, n], u)
    S_in, U = torch.stack(states, 1), torch.stack(us, 1)  # [BH, N, K, V], [BH, N, C, V]
    q_read = qc * e_G
    o = scale * (q_read @ S_in + A_qk @ U)
    o = from_chunks(o, B, T, H).to(q.dtype)
    saved = (qc, kc, vc, bc, G, S_in, U, m_inv, A_qk, A_kk, w_k, q_read, k_read, k_write, e_G, e_end)
    return o, state.view(B, H, K, V), (saved, levels)


def _backward(saved, levels, do, dht, scale, per_head, has_h0, B, T, H):
    """Hand-written backward of :func:`_forward` (derivation: README.md, 'Backward')."""
    qc, kc, vc, bc, G, S_in, U, m_inv, A_qk, A_kk, w_k, q_read, k_read, k_write, e_G, e_end = saved
    BH, N, C, K = qc.shape
    V = vc.shape[-1]
    cdt = qc.dtype
    decay = torch.exp(G[:, :, -1])[..., None, None] if per_head else torch.exp(G[:, :, -1]).unsqueeze(-1)
    do_c = to_chunks(do, C, cdt) * scale
    # Reverse scan: dS = gradient of the state after chunk n; U_n = W_v - W_k S_n.
    d_u_intra = A_qk.transpose(-1, -2) @ do_c  # [BH, N, C, V]
    d_s_read = q_read.transpose(-1, -2) @ do_c  # [BH, N, K, V]
    d_state = qc.new_zeros(BH, K, V) if dht is None else dht.to(cdt).reshape(BH, K, V)
    d_after, d_us = [None] * N, [None] * N
    w_k_t = w_k.transpose(-1, -2)
    for n in range(N - 1, -1, -1):
        d_after[n] = d_state
        d_u = torch.baddbmm(d_u_intra[:, n], k_write[:, n], d_state)
        d_us[n] = d_u
        d_state = torch.baddbmm(decay[:, n] * d_state + d_s_read[:, n], w_k_t[:, n], d_u, alpha=-1)
    dh0 = d_state.view(B, H, K, V) if has_h0 else None
    dS_after, dU = torch.stack(d_after, 1), torch.stack(d_us, 1)
    # U = T^-1 diag(beta) R with R = V - (K exp G) S_n.
    d_rb = m_inv.transpose(-1, -2) @ dU
    resid = vc - k_read @ S_in
    d_l = -(d_rb @ U.transpose(-1, -2)).tril(-1)  # gradient of the strict part of T, over beta
    dbeta = (resid * d_rb).sum(-1) + (A_kk * d_l).sum(-1)
    d_r = bc.unsqueeze(-1) * d_rb
    dv = d_r
    d_k_read = -(d_r @ S_in.transpose(-1, -2))
    d_q_read = do_c @ S_in.transpose(-1, -2)
    d_k_write = U @ dS_after.transpose(-1, -2)
    d_qk = (do_c @ U.transpose(-1, -2)).tril()  # gradient of A_qk
    d_kk = bc.unsqueeze(-1) * d_l  # gradient of A_kk
    # Decay gradient: dG (of the in-chunk cumulative log-decay) from the pairs that span a decay,
    # d_end (of the log-decay to the chunk end), d_last (of the whole chunk's decay of S_n).
    dG = torch.addcmul(q_read * d_q_read, k_read, d_k_read)
    d_end = k_write * d_k_write
    dq = d_q_read.mul_(e_G)
    dk = d_k_read.mul_(e_G).addcmul_(d_k_write, e_end)
    d_last = (S_in * dS_after).sum(-1) * decay.squeeze(-1)  # [BH, N, K] ([BH, N, 1] per head)
    if per_head:
        dG, d_end = dG.sum(-1), d_end.sum(-1)
        d_last = d_last.sum(-1)
        causal = torch.ones(C, C, dtype=torch.bool, device=qc.device).tril()
        E = torch.exp(torch.where(causal, G.unsqueeze(-1) - G.unsqueeze(-2), float("-inf")))
        dq_e, dk_e = d_qk * E, d_kk * E
        dq = dq + dq_e @ kc
        dk = dk + dq_e.transpose(-1, -2) @ qc + dk_e @ kc + dk_e.transpose(-1, -2) @ kc
        d_pair = (d_qk * A_qk).tril(-1) + d_kk * A_kk  # d/d(G_t - G_s) of every spanning pair
        dG = dG + d_pair.sum(-1) - d_pair.sum(-2)
    else:
        rows_qk, rows_kk = decayed_rows((d_qk, d_kk), kc, levels)  # k is the column feature of both
        cols = decayed_cols(((d_qk, qc), (d_kk, kc)), levels)  # and gets both column gradients
        diag = d_qk.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # the pair (t, t): no decay
        dq.add_(rows_qk).addcmul_(diag, kc)
        dk.add_(cols).addcmul_(diag, qc).add_(rows_kk)
        dG.addcmul_(qc, rows_qk).addcmul_(kc, rows_kk.sub_(cols))
    # G_t = sum_{u <= t} g_u, to_end_s = sum_{u > s} g_u, G_last = sum of the chunk (in-chunk sums).
    dg = dG.flip(2).cumsum(2).flip(2) + F.pad(d_end.cumsum(2)[:, :, :-1], (0, 0) * (dG.dim() - 3) + (1, 0))
    dg = dg + d_last.unsqueeze(2)
    out = [from_chunks(x, B, T, H) for x in (dq, dk, dv, dg, dbeta)]
    return out, dh0


class TorchGatedDeltaFunction(torch.autograd.Function):
    """The chunked torch form with its hand-written backward (inputs checked by the caller)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, initial_state, scale, chunk_size):
        ctx.set_materialize_grads(False)
        o, state, (saved, levels) = _forward(q, k, v, g, beta, initial_state, scale, chunk_size)
        ctx.save_for_backward(*saved)
        ctx.levels = levels
        ctx.scale, ctx.shape = scale, q.shape
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, g.dtype, beta.dtype)
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        ctx.per_head = g.dim() == 3
        return o, state

    @staticmethod
    def backward(ctx, do, dht):
        B, T, H, K = ctx.shape
        saved = ctx.saved_tensors
        if do is None:
            do = saved[0].new_zeros(B, T, H, saved[2].shape[-1])
        with torch.autocast(do.device.type, enabled=False):
            (dq, dk, dv, dg, dbeta), dh0 = _backward(saved, ctx.levels, do, dht, ctx.scale, ctx.per_head,
                                                     ctx.h0_dtype is not None, B, T, H)
        grads = [x.to(dt) for x, dt in zip((dq, dk, dv, dg, dbeta), ctx.dtypes, strict=True)]
        dh0 = dh0.to(ctx.h0_dtype) if dh0 is not None else None
        return (*grads, dh0, None, None)
