"""Block-causal linear attention with per-channel block decay: Triton kernels (forward and backward).

Same function as ``naive_block_la`` (see ``naive.py``). Blocks are grouped into super-chunks of
``NPS`` blocks (about ``SUPER_CHUNK_TOKENS`` tokens; one block when a block is that long). Every
program keeps a [K, BV] slice of a state in registers (fp32) and reads a block in token tiles of
``BT`` rows (masked where the block or the sequence ends). Five kernels, three phases each way:

* forward: (1) per super-chunk, in parallel, its contribution ``sum_c (prod of later decays) K_c^T V_c``
  (a walk over its blocks from a zero state); (2) a scan over super-chunks,
  ``S <- diag(exp G_sc) S + contribution``, storing the state each super-chunk starts from;
  (3) per super-chunk, in parallel, a walk over its blocks from that state writing
  ``o = scale * Q S`` (strict blocks read before adding ``K^T V``, inclusive after).
* backward: dq by the same walk as (3) with ``dq = scale * dO S^T`` (stored states, one partial per
  value tile summed on the host); (1') per super-chunk the contribution of its ``scale * Q^T dO``
  to the state gradient (a reverse walk from zero); (2') the same scan in reverse, giving ``dS``
  after every super-chunk and ``dS0``; (3') per super-chunk a reverse walk from that ``dS``
  writing ``dk = V dS^T``, ``dv = K dS``, ``dS <- diag(exp g) dS + scale * Q^T dO`` (inclusive:
  the ``Q^T dO`` term joins before dk, dv are read).
* ``dg`` on the host from the identity in README.md: with ``Q_c = sum_{i in c} q_i * dq_i``,
  ``K_c = sum_{j in c} k_j * dk_j`` and ``R = rowsum(S_final * dS_final)``,
  strict ``dg_c = R + sum_{c' > c} Q_c' - sum_{c' >= c} K_c'``, inclusive
  ``dg_c = R + sum_{c' >= c} (Q_c' - K_c')``.

Grid: (batch x head, value tiles, super-chunks). Memory: one [K, V] state per super-chunk.
Interpreter rules (TRITON_INTERPRET=1 on CPU, see layers.md): pointer arithmetic with masks, fp32
``tl.dot`` only, ``tl.cast`` on loop variables, one fixed launch configuration (no autotuning),
dot tiles >= 16. GPU dots use IEEE fp32 unless ``torch.backends.cuda.matmul.allow_tf32`` is set.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from layers.ops.block_la.naive import MAX_KERNEL_HEAD_DIM as MAX_HEAD_DIM
from layers.ops.block_la.naive import check_block_la_inputs, num_blocks

SUPER_CHUNK_TOKENS = 64
"""Blocks per super-chunk: ``max(1, SUPER_CHUNK_TOKENS // block_size)``."""


@triton.jit
def _tile_rows(i_b, i_h, T, t_blk, i_s, H: tl.constexpr, L: tl.constexpr, BT: tl.constexpr):
    """Flat row index ((b * T + t) * H + h) of token tile ``i_s`` of the block starting at ``t_blk``."""
    o_in = tl.cast(i_s, tl.int64) * BT + tl.arange(0, BT)
    m_t = (o_in < L) & (t_blk + o_in < T)
    return (i_b * T + t_blk + o_in) * H + i_h, m_t


@triton.jit
def _load_rows(p, row, m_t, o_d, m_d, D: tl.constexpr):
    """[BT, BD] tile of a [B, T, H, D] tensor as fp32 (zeros where masked)."""
    return tl.load(p + row[:, None] * D + o_d[None, :], mask=m_t[:, None] & m_d[None, :], other=0.0).to(
        tl.float32
    )


@triton.jit
def _decay(b_h, g, i_b, i_c, i_h, NB, o_k, m_k, H: tl.constexpr, K: tl.constexpr):
    """diag(exp g_c) b_h (no-op for blocks past the end)."""
    b_g = tl.load(
        g + ((i_b * NB + i_c) * H + i_h) * K + o_k, mask=m_k & (i_c + tl.zeros_like(o_k) < NB), other=0.0
    ).to(tl.float32)
    return b_h * tl.exp(b_g)[:, None]


# fmt: off
@triton.jit
def _chunk_contrib_kernel(
    a, b, g, out, scale, T, NB, NC, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, L: tl.constexpr,
    NS: tl.constexpr, NPS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, REVERSE: tl.constexpr, INCLUSIVE: tl.constexpr, PRECISION: tl.constexpr,
):
    # fmt: on
    # Forward (REVERSE=False, a=k, b=v): the state a super-chunk adds, sum_c decay_after_c * K_c^T V_c.
    # Backward (REVERSE=True, a=q, b=do): what it adds to the gradient of the state before it.
    i_bh, i_v, i_sc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    b_s = tl.zeros([BK, BV], dtype=tl.float32)
    for i_n in range(0, NPS):
        if REVERSE:
            i_c = i_sc * NPS + NPS - 1 - i_n
        else:
            i_c = i_sc * NPS + i_n
        t_blk = tl.cast(i_c, tl.int64) * L
        b_ab = tl.zeros([BK, BV], dtype=tl.float32)
        for i_s in range(0, NS):
            row, m_t = _tile_rows(i_b, i_h, T, t_blk, i_s, H, L, BT)
            b_a = _load_rows(a, row, m_t, o_k, m_k, K)
            b_b = _load_rows(b, row, m_t, o_v, m_v, V)
            b_ab += tl.dot(tl.trans(b_a), b_b, input_precision=PRECISION)
        if REVERSE and INCLUSIVE:
            b_s += b_ab * scale
        if USE_G:
            b_s = _decay(b_s, g, i_b, i_c, i_h, NB, o_k, m_k, H, K)
        if REVERSE and not INCLUSIVE:
            b_s += b_ab * scale
        if not REVERSE:
            b_s += b_ab
    p_out = out + ((tl.cast(i_bh, tl.int64) * NC + i_sc) * K + o_k[:, None]) * V + o_v[None, :]
    tl.store(p_out, b_s, mask=m_k[:, None] & m_v[None, :])


# fmt: off
@triton.jit
def _chunk_scan_kernel(
    x, gsc, h0, ht, NC, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, USE_H0: tl.constexpr, REVERSE: tl.constexpr,
):
    # fmt: on
    # x [B, H, NC, K, V]: contributions in, overwritten with the state entering each super-chunk
    # (REVERSE: the gradient of the state leaving it); S <- diag(exp G_sc) S + x_sc; ht = last S.
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + p_state, mask=m_kv, other=0.0).to(tl.float32)
    for i_r in range(0, NC):
        if REVERSE:
            i_sc = NC - 1 - i_r
        else:
            i_sc = i_r
        p_x = x + ((tl.cast(i_bh, tl.int64) * NC + i_sc) * K + o_k[:, None]) * V + o_v[None, :]
        b_x = tl.load(p_x, mask=m_kv, other=0.0)
        tl.store(p_x, b_h, mask=m_kv)
        if USE_G:
            b_h = _decay(b_h, gsc, i_b, i_sc, i_h, NC, o_k, m_k, H, K)
        b_h += b_x
    tl.store(ht + p_state, b_h, mask=m_kv)


# fmt: off
@triton.jit
def _read_tile(
    x, out, b_h, row, m_t, o_k, m_k, o_v, m_v, scale, out_offset, K: tl.constexpr, V: tl.constexpr,
    GRAD: tl.constexpr, PRECISION: tl.constexpr,
):
    # fmt: on
    """o = scale * q S (x = q, out = o) or dq = scale * dO S^T (x = do, out = dq partial)."""
    if GRAD:
        b_do = _load_rows(x, row, m_t, o_v, m_v, V)
        b_dq = tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION) * scale
        tl.store(out + out_offset + row[:, None] * K + o_k[None, :], b_dq, mask=m_t[:, None] & m_k[None, :])
    else:
        b_q = _load_rows(x, row, m_t, o_k, m_k, K)
        b_o = tl.dot(b_q, b_h, input_precision=PRECISION) * scale
        tl.store(
            out + row[:, None] * V + o_v[None, :],
            b_o.to(out.dtype.element_ty),
            mask=m_t[:, None] & m_v[None, :],
        )


# fmt: off
@triton.jit
def _chunk_read_kernel(
    x, k, v, g, h, out, scale, T, NB, NC, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    L: tl.constexpr, NS: tl.constexpr, NPS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, INCLUSIVE: tl.constexpr, GRAD: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # fmt: on
    # Walk the blocks of one super-chunk from its entering state h[sc]; read it per block.
    i_bh, i_v, i_sc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    p_h = h + ((tl.cast(i_bh, tl.int64) * NC + i_sc) * K + o_k[:, None]) * V + o_v[None, :]
    b_h = tl.load(p_h, mask=m_k[:, None] & m_v[None, :], other=0.0)
    out_offset = tl.cast(i_v, tl.int64) * (tl.cast(T, tl.int64) * (tl.num_programs(0) * K))
    for i_n in range(0, NPS):
        i_c = i_sc * NPS + i_n
        t_blk = tl.cast(i_c, tl.int64) * L
        b_kv = tl.zeros([BK, BV], dtype=tl.float32)
        for i_s in range(0, NS):
            row, m_t = _tile_rows(i_b, i_h, T, t_blk, i_s, H, L, BT)
            if NPS > 1:  # the state is only carried on inside a super-chunk of several blocks
                b_k = _load_rows(k, row, m_t, o_k, m_k, K)
                b_v = _load_rows(v, row, m_t, o_v, m_v, V)
                b_kv += tl.dot(tl.trans(b_k), b_v, input_precision=PRECISION)
            if not INCLUSIVE:
                _read_tile(
                    x, out, b_h, row, m_t, o_k, m_k, o_v, m_v, scale, out_offset, K, V, GRAD, PRECISION
                )
        if INCLUSIVE:
            if NPS == 1:
                for i_s in range(0, NS):
                    row, m_t = _tile_rows(i_b, i_h, T, t_blk, i_s, H, L, BT)
                    b_k = _load_rows(k, row, m_t, o_k, m_k, K)
                    b_v = _load_rows(v, row, m_t, o_v, m_v, V)
                    b_kv += tl.dot(tl.trans(b_k), b_v, input_precision=PRECISION)
        if USE_G:
            b_h = _decay(b_h, g, i_b, i_c, i_h, NB, o_k, m_k, H, K)
        b_h += b_kv
        if INCLUSIVE:
            for i_s in range(0, NS):
                row, m_t = _tile_rows(i_b, i_h, T, t_blk, i_s, H, L, BT)
                _read_tile(
                    x, out, b_h, row, m_t, o_k, m_k, o_v, m_v, scale, out_offset, K, V, GRAD, PRECISION
                )


# fmt: off
@triton.jit
def _chunk_dkdv_kernel(
    q, k, v, g, do, dh, dk, dv, scale, T, NB, NC, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    L: tl.constexpr, NS: tl.constexpr, NPS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, INCLUSIVE: tl.constexpr, PRECISION: tl.constexpr,
):
    # fmt: on
    # Reverse walk of one super-chunk from dh[sc] (gradient of the state after it).
    i_bh, i_v, i_sc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    p_dh = dh + ((tl.cast(i_bh, tl.int64) * NC + i_sc) * K + o_k[:, None]) * V + o_v[None, :]
    b_dh = tl.load(p_dh, mask=m_k[:, None] & m_v[None, :], other=0.0)
    dk_offset = tl.cast(i_v, tl.int64) * (tl.cast(T, tl.int64) * (tl.num_programs(0) * K))
    for i_n in range(0, NPS):
        i_c = i_sc * NPS + NPS - 1 - i_n
        t_blk = tl.cast(i_c, tl.int64) * L
        b_qdo = tl.zeros([BK, BV], dtype=tl.float32)
        if INCLUSIVE or NPS > 1:  # Q^T dO of this block, needed before (inclusive) or after the reads
            for i_s in range(0, NS):
                row, m_t = _tile_rows(i_b, i_h, T, t_blk, i_s, H, L, BT)
                b_q = _load_rows(q, row, m_t, o_k, m_k, K)
                b_do = _load_rows(do, row, m_t, o_v, m_v, V)
                b_qdo += tl.dot(tl.trans(b_q), b_do, input_precision=PRECISION)
        if INCLUSIVE:
            b_dh += b_qdo * scale
        for i_s in range(0, NS):
            row, m_t = _tile_rows(i_b, i_h, T, t_blk, i_s, H, L, BT)
            b_k = _load_rows(k, row, m_t, o_k, m_k, K)
            b_v = _load_rows(v, row, m_t, o_v, m_v, V)
            b_dk = tl.dot(b_v, tl.trans(b_dh), input_precision=PRECISION)
            b_dv = tl.dot(b_k, b_dh, input_precision=PRECISION)
            tl.store(dk + dk_offset + row[:, None] * K + o_k[None, :], b_dk, mask=m_t[:, None] & m_k[None, :])
            tl.store(
                dv + row[:, None] * V + o_v[None, :],
                b_dv.to(dv.dtype.element_ty),
                mask=m_t[:, None] & m_v[None, :],
            )
        if USE_G:
            b_dh = _decay(b_dh, g, i_b, i_c, i_h, NB, o_k, m_k, H, K)
        if not INCLUSIVE:
            b_dh += b_qdo * scale


def _launch_config(T: int, K: int, V: int, block_size: int) -> dict:
    """Tile sizes (powers of two, >= 16 for ``tl.dot``), token tiles per block, blocks per super-chunk."""
    if K > MAX_HEAD_DIM:
        raise ValueError(
            f"block_la (triton): key dim K must be <= {MAX_HEAD_DIM}, got {K}; use backend='torch'"
        )
    rows = min(block_size, max(T, 1))
    bt = min(64, max(16, triton.next_power_of_2(rows)))
    bk = max(16, triton.next_power_of_2(K))
    bv = min(64 if bk <= 128 else 32, max(16, triton.next_power_of_2(V)))
    nps = max(1, min(SUPER_CHUNK_TOKENS // block_size, num_blocks(T, block_size)))
    return dict(L=block_size, NS=triton.cdiv(rows, bt), NPS=nps, BT=bt, BK=bk, BV=bv)


def _dot_precision(device: torch.device) -> str:
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _super_chunk_decay(g: torch.Tensor, nps: int, nc: int) -> torch.Tensor:
    """Total log-decay of each super-chunk [B, NC, H, K] from the per-block g [B, NB, H, K]."""
    B, nb, H, K = g.shape
    return (
        torch.nn.functional.pad(g, (0, 0, 0, 0, 0, nc * nps - nb)).view(B, nc, nps, H, K).sum(2).contiguous()
    )


class BlockLAFunction(torch.autograd.Function):
    """Forward and backward kernels of block-causal linear attention (inputs contiguous, checked)."""

    @staticmethod
    def forward(ctx, q, k, v, g, initial_state, block_size, scale, inclusive):
        B, T, H, K = q.shape
        V = v.shape[-1]
        cfg = _launch_config(T, K, V, block_size)
        nb = num_blocks(T, block_size)
        nc = triton.cdiv(nb, cfg["NPS"])
        nv = triton.cdiv(V, cfg["BV"])
        gsc = None if g is None else _super_chunk_decay(g, cfg["NPS"], nc)
        common = dict(H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], USE_G=g is not None, num_warps=4)
        walk = dict(
            common, L=block_size, NS=cfg["NS"], NPS=cfg["NPS"], BT=cfg["BT"], INCLUSIVE=bool(inclusive)
        )
        walk["PRECISION"] = _dot_precision(q.device)
        g_arg = q if g is None else g
        states = torch.empty(B, H, nc, K, V, dtype=torch.float32, device=q.device)
        ht = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
        o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
        _chunk_contrib_kernel[(B * H, nv, nc)](k, v, g_arg, states, 1.0, T, nb, nc, REVERSE=False, **walk)
        _chunk_scan_kernel[(B * H, nv)](
            states,
            q if gsc is None else gsc,
            q if initial_state is None else initial_state,
            ht,
            nc,
            USE_H0=initial_state is not None,
            REVERSE=False,
            **common,
        )
        _chunk_read_kernel[(B * H, nv, nc)](
            q, k, v, g_arg, states, o, float(scale), T, nb, nc, GRAD=False, **walk
        )
        ctx.save_for_backward(q, k, v, g, gsc, initial_state, states, ht)
        ctx.block_size, ctx.scale, ctx.inclusive = block_size, scale, inclusive
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, gsc, initial_state, states, ht = ctx.saved_tensors
        B, T, H, K = q.shape
        V = v.shape[-1]
        cfg = _launch_config(T, K, V, ctx.block_size)
        nb, nc = num_blocks(T, ctx.block_size), states.shape[2]
        nv = triton.cdiv(V, cfg["BV"])
        common = dict(H=H, K=K, V=V, BK=cfg["BK"], BV=cfg["BV"], USE_G=g is not None, num_warps=4)
        walk = dict(
            common,
            L=ctx.block_size,
            NS=cfg["NS"],
            NPS=cfg["NPS"],
            BT=cfg["BT"],
            INCLUSIVE=bool(ctx.inclusive),
        )
        walk["PRECISION"] = _dot_precision(q.device)
        g_arg, scale = (q if g is None else g), float(ctx.scale)
        do = do.contiguous()
        dht = None if dht is None else dht.float().contiguous()
        dq_part = torch.empty(nv, B, T, H, K, dtype=torch.float32, device=q.device)
        _chunk_read_kernel[(B * H, nv, nc)](
            do, k, v, g_arg, states, dq_part, scale, T, nb, nc, GRAD=True, **walk
        )
        dstates = torch.empty(B, H, nc, K, V, dtype=torch.float32, device=q.device)
        dh0 = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
        _chunk_contrib_kernel[(B * H, nv, nc)](q, do, g_arg, dstates, scale, T, nb, nc, REVERSE=True, **walk)
        _chunk_scan_kernel[(B * H, nv)](
            dstates,
            q if gsc is None else gsc,
            q if dht is None else dht,
            dh0,
            nc,
            USE_H0=dht is not None,
            REVERSE=True,
            **common,
        )
        dk_part = torch.empty(nv, B, T, H, K, dtype=torch.float32, device=q.device)
        dv = torch.empty(B, T, H, V, dtype=torch.float32, device=q.device)
        _chunk_dkdv_kernel[(B * H, nv, nc)](
            q, k, v, g_arg, do, dstates, dk_part, dv, scale, T, nb, nc, **walk
        )
        dq, dk = dq_part.sum(0), dk_part.sum(0)
        dg = None
        if g is not None and ctx.needs_input_grad[3]:
            dg = _decay_grad(q, k, dq, dk, ht, dht, ctx.block_size, ctx.inclusive).to(g.dtype)
        dh0 = dh0.to(initial_state.dtype) if initial_state is not None else None
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg, dh0, None, None, None


def _decay_grad(q, k, dq, dk, final_state, d_final_state, block_size, inclusive):
    """dL/dg [B, NB, H, K] from the full dq, dk and the final state (identity in the module docstring)."""
    B, T, H, K = q.shape
    nb = num_blocks(T, block_size)
    pad = nb * block_size - T
    per_token = torch.stack([q.float() * dq, k.float() * dk])  # [2, B, T, H, K]
    per_block = (
        torch.nn.functional.pad(per_token, (0, 0, 0, 0, 0, pad)).view(2, B, nb, block_size, H, K).sum(3)
    )
    q_blk, k_blk = per_block[0], per_block[1]
    rev = lambda x: x.flip(1).cumsum(1).flip(1)  # sum over blocks c' >= c
    dg = rev(q_blk - k_blk) if inclusive else rev(q_blk) - q_blk - rev(k_blk)
    if d_final_state is not None:
        dg = dg + (final_state * d_final_state).sum(-1).unsqueeze(1)
    return dg


def triton_block_la(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    block_size: int = 64,
    scale: float = 1.0,
    inclusive: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block-causal linear attention on the Triton kernels (contract of ``naive_block_la``).

    Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``
    set before this module is imported). Inputs in float32/float16/bfloat16; states and dots in
    float32. Gradients flow to q, k, v, g and initial_state.

    Example (needs CUDA, so not run by the doctests; the CPU path is ``chunk_block_la``'s example):
        >>> q = k = torch.randn(1, 512, 4, 64, device="cuda")                # doctest: +SKIP
        >>> v = torch.randn(1, 512, 4, 64, device="cuda")                    # doctest: +SKIP
        >>> g = -torch.rand(1, 2, 4, 64, device="cuda")                      # doctest: +SKIP
        >>> o, s = triton_block_la(q, k, v, g, 256, output_final_state=True)  # doctest: +SKIP
    """
    check_block_la_inputs(q, k, v, g, block_size, initial_state)
    if q.dtype == torch.float64:
        raise ValueError(
            "block_la (triton): q is float64 but the kernels compute in float32; use backend='torch'"
        )
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"block_la (triton): q is on {q.device}; the kernels need CUDA tensors, or TRITON_INTERPRET=1"
            " set before importing layers.ops.block_la.triton"
        )
    B, T, H, K = q.shape
    if T == 0:
        state = (
            q.new_zeros(B, H, K, v.shape[-1], dtype=torch.float32) if initial_state is None else initial_state
        )
        return q.new_zeros(B, 0, H, v.shape[-1]), (state.float() if output_final_state else None)
    g_c = None if g is None else g.float().contiguous()
    h0_c = None if initial_state is None else initial_state.float().contiguous()
    o, ht = BlockLAFunction.apply(
        q.contiguous(), k.contiguous(), v.contiguous(), g_c, h0_c, block_size, scale, inclusive
    )
    return o, (ht if output_final_state else None)
