"""Block-causal linear attention with per-channel block decay: Triton kernels (forward and backward).

Same function as ``naive_block_la`` (see ``naive.py``). One program per (value tile, batch x head)
keeps the [K, BV] state in registers (fp32) and walks the blocks in order; a block is read in token
tiles of ``BT`` rows (masked where the block or the sequence ends):

* forward: strict blocks read the state and accumulate ``K^T V`` tile by tile, then
  ``S = diag(exp g) S + K^T V``; inclusive blocks accumulate and update first, then read.
* backward ``dq``: the same forward walk with ``dq = scale * dO S^T`` (one partial per value tile,
  summed on the host).
* backward ``dk, dv, dS0``: a reverse walk carrying ``dS`` (the gradient of the state after the
  block): ``dk = V dS^T``, ``dv = K dS``, ``dS <- diag(exp g) dS + scale * Q^T dO`` (inclusive: the
  ``Q^T dO`` term joins before ``dk, dv`` are read).
* ``dg`` on the host from the identity (README.md): with ``Q_c = sum_{i in c} q_i * dq_i``,
  ``K_c = sum_{j in c} k_j * dk_j`` and ``R = rowsum(S_final * dS_final)``,
  strict ``dg_c = R + sum_{c' > c} Q_c' - sum_{c' >= c} K_c'``, inclusive
  ``dg_c = R + sum_{c' >= c} (Q_c' - K_c')``.

Interpreter rules (TRITON_INTERPRET=1 on CPU, see layers.md): pointer arithmetic with masks, fp32
``tl.dot`` only, ``tl.cast`` on loop variables, one fixed launch configuration (no autotuning),
dot tiles >= 16. GPU dots use IEEE fp32 unless ``torch.backends.cuda.matmul.allow_tf32`` is set.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from layers.ops.block_la.chunk import MAX_KERNEL_HEAD_DIM as MAX_HEAD_DIM
from layers.ops.block_la.naive import check_block_la_inputs, num_blocks


@triton.jit
def _block_la_fwd_kernel(
    q,
    k,
    v,
    g,
    h0,
    o,
    ht,
    scale,
    T,
    NB,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    L: tl.constexpr,
    NS: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_G: tl.constexpr,
    USE_H0: tl.constexpr,
    INCLUSIVE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_bh, i_v = tl.program_id(0), tl.program_id(1)  # batch x head on axis 0 (no 65535 limit)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + p_state, mask=m_kv, other=0.0).to(tl.float32)
    for i_c in range(0, NB):
        t_blk = tl.cast(i_c, tl.int64) * L
        b_kv = tl.zeros([BK, BV], dtype=tl.float32)
        for i_s in range(0, NS):
            o_in = tl.cast(i_s, tl.int64) * BT + o_t
            m_t = (o_in < L) & (t_blk + o_in < T)
            row = (i_b * T + t_blk + o_in) * H + i_h
            b_k = tl.load(
                k + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
            ).to(tl.float32)
            b_v = tl.load(
                v + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
            ).to(tl.float32)
            b_kv += tl.dot(tl.trans(b_k), b_v, input_precision=PRECISION)
            if not INCLUSIVE:
                b_q = tl.load(
                    q + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
                ).to(tl.float32)
                b_o = tl.dot(b_q, b_h, input_precision=PRECISION) * scale
                tl.store(
                    o + row[:, None] * V + o_v[None, :],
                    b_o.to(o.dtype.element_ty),
                    mask=m_t[:, None] & m_v[None, :],
                )
        if USE_G:
            b_g = tl.load(g + ((i_b * NB + i_c) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
            b_h = b_h * tl.exp(b_g)[:, None]
        b_h += b_kv
        if INCLUSIVE:
            for i_s in range(0, NS):
                o_in = tl.cast(i_s, tl.int64) * BT + o_t
                m_t = (o_in < L) & (t_blk + o_in < T)
                row = (i_b * T + t_blk + o_in) * H + i_h
                b_q = tl.load(
                    q + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
                ).to(tl.float32)
                b_o = tl.dot(b_q, b_h, input_precision=PRECISION) * scale
                tl.store(
                    o + row[:, None] * V + o_v[None, :],
                    b_o.to(o.dtype.element_ty),
                    mask=m_t[:, None] & m_v[None, :],
                )
    tl.store(ht + p_state, b_h, mask=m_kv)


@triton.jit
def _block_la_bwd_dq_kernel(
    k,
    v,
    g,
    h0,
    do,
    dq,
    scale,
    T,
    NB,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    L: tl.constexpr,
    NS: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_G: tl.constexpr,
    USE_H0: tl.constexpr,
    INCLUSIVE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # dq[i_v] = scale * dO[:, value tile] S[:, value tile]^T, S = the state each block reads.
    i_bh, i_v = tl.program_id(0), tl.program_id(1)  # batch x head on axis 0 (no 65535 limit)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(
            h0 + (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :], mask=m_kv, other=0.0
        )
    p_dq_base = dq + tl.cast(i_v, tl.int64) * (tl.cast(T, tl.int64) * (tl.num_programs(0) * K))
    for i_c in range(0, NB):
        t_blk = tl.cast(i_c, tl.int64) * L
        b_kv = tl.zeros([BK, BV], dtype=tl.float32)
        for i_s in range(0, NS):
            o_in = tl.cast(i_s, tl.int64) * BT + o_t
            m_t = (o_in < L) & (t_blk + o_in < T)
            row = (i_b * T + t_blk + o_in) * H + i_h
            b_k = tl.load(
                k + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
            ).to(tl.float32)
            b_v = tl.load(
                v + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
            ).to(tl.float32)
            b_kv += tl.dot(tl.trans(b_k), b_v, input_precision=PRECISION)
            if not INCLUSIVE:
                b_do = tl.load(
                    do + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
                ).to(tl.float32)
                b_dq = tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION) * scale
                tl.store(p_dq_base + row[:, None] * K + o_k[None, :], b_dq, mask=m_t[:, None] & m_k[None, :])
        if USE_G:
            b_g = tl.load(g + ((i_b * NB + i_c) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
            b_h = b_h * tl.exp(b_g)[:, None]
        b_h += b_kv
        if INCLUSIVE:
            for i_s in range(0, NS):
                o_in = tl.cast(i_s, tl.int64) * BT + o_t
                m_t = (o_in < L) & (t_blk + o_in < T)
                row = (i_b * T + t_blk + o_in) * H + i_h
                b_do = tl.load(
                    do + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
                ).to(tl.float32)
                b_dq = tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION) * scale
                tl.store(p_dq_base + row[:, None] * K + o_k[None, :], b_dq, mask=m_t[:, None] & m_k[None, :])


@triton.jit
def _block_la_bwd_dkdv_kernel(
    q,
    k,
    v,
    g,
    do,
    dht,
    dk,
    dv,
    dh0,
    scale,
    T,
    NB,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    L: tl.constexpr,
    NS: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_G: tl.constexpr,
    USE_DHT: tl.constexpr,
    INCLUSIVE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # Reverse walk; b_dh = gradient of the state after the current block (value tile i_v).
    i_bh, i_v = tl.program_id(0), tl.program_id(1)  # batch x head on axis 0 (no 65535 limit)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :]
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + p_state, mask=m_kv, other=0.0).to(tl.float32)
    p_dk_base = dk + tl.cast(i_v, tl.int64) * (tl.cast(T, tl.int64) * (tl.num_programs(0) * K))
    for i_r in range(0, NB):
        i_c = NB - 1 - i_r
        t_blk = tl.cast(i_c, tl.int64) * L
        b_qdo = tl.zeros([BK, BV], dtype=tl.float32)
        for i_s in range(0, NS):
            o_in = tl.cast(i_s, tl.int64) * BT + o_t
            m_t = (o_in < L) & (t_blk + o_in < T)
            row = (i_b * T + t_blk + o_in) * H + i_h
            b_q = tl.load(
                q + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
            ).to(tl.float32)
            b_do = tl.load(
                do + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
            ).to(tl.float32)
            b_qdo += tl.dot(tl.trans(b_q), b_do, input_precision=PRECISION)
            if not INCLUSIVE:
                b_k = tl.load(
                    k + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
                ).to(tl.float32)
                b_v = tl.load(
                    v + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
                ).to(tl.float32)
                b_dk = tl.dot(b_v, tl.trans(b_dh), input_precision=PRECISION)
                b_dv = tl.dot(b_k, b_dh, input_precision=PRECISION)
                tl.store(p_dk_base + row[:, None] * K + o_k[None, :], b_dk, mask=m_t[:, None] & m_k[None, :])
                tl.store(
                    dv + row[:, None] * V + o_v[None, :],
                    b_dv.to(dv.dtype.element_ty),
                    mask=m_t[:, None] & m_v[None, :],
                )
        if INCLUSIVE:
            b_dh += b_qdo * scale
            for i_s in range(0, NS):
                o_in = tl.cast(i_s, tl.int64) * BT + o_t
                m_t = (o_in < L) & (t_blk + o_in < T)
                row = (i_b * T + t_blk + o_in) * H + i_h
                b_k = tl.load(
                    k + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
                ).to(tl.float32)
                b_v = tl.load(
                    v + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
                ).to(tl.float32)
                b_dk = tl.dot(b_v, tl.trans(b_dh), input_precision=PRECISION)
                b_dv = tl.dot(b_k, b_dh, input_precision=PRECISION)
                tl.store(p_dk_base + row[:, None] * K + o_k[None, :], b_dk, mask=m_t[:, None] & m_k[None, :])
                tl.store(
                    dv + row[:, None] * V + o_v[None, :],
                    b_dv.to(dv.dtype.element_ty),
                    mask=m_t[:, None] & m_v[None, :],
                )
        if USE_G:
            b_g = tl.load(g + ((i_b * NB + i_c) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
            b_dh = b_dh * tl.exp(b_g)[:, None]
        if not INCLUSIVE:
            b_dh += b_qdo * scale
    tl.store(dh0 + p_state, b_dh, mask=m_kv)


def _launch_config(T: int, K: int, V: int, block_size: int) -> dict:
    """Tile sizes (powers of two, >= 16 for ``tl.dot``) and the number of token tiles per block."""
    if K > MAX_HEAD_DIM:
        raise ValueError(
            f"block_la (triton): key dim K must be <= {MAX_HEAD_DIM}, got {K}; use backend='torch'"
        )
    bt = min(64, max(16, triton.next_power_of_2(min(block_size, max(T, 1)))))
    bk = max(16, triton.next_power_of_2(K))
    bv = min(64 if bk <= 128 else 32, max(16, triton.next_power_of_2(V)))
    return dict(L=block_size, NS=triton.cdiv(min(block_size, max(T, 1)), bt), BT=bt, BK=bk, BV=bv)


def _dot_precision(device: torch.device) -> str:
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


class BlockLAFunction(torch.autograd.Function):
    """Forward and backward kernels of block-causal linear attention (inputs contiguous, checked)."""

    @staticmethod
    def forward(ctx, q, k, v, g, initial_state, block_size, scale, inclusive):
        B, T, H, K = q.shape
        V = v.shape[-1]
        nb = num_blocks(T, block_size)
        cfg = _launch_config(T, K, V, block_size)
        precision = _dot_precision(q.device)
        o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
        ht = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
        grid = (B * H, triton.cdiv(V, cfg["BV"]))
        _block_la_fwd_kernel[grid](
            q,
            k,
            v,
            q if g is None else g,
            q if initial_state is None else initial_state,
            o,
            ht,
            float(scale),
            T,
            nb,
            H=H,
            K=K,
            V=V,
            **cfg,
            USE_G=g is not None,
            USE_H0=initial_state is not None,
            INCLUSIVE=bool(inclusive),
            PRECISION=precision,
            num_warps=4,
        )
        ctx.save_for_backward(q, k, v, g, initial_state, ht)
        ctx.block_size, ctx.scale, ctx.inclusive = block_size, scale, inclusive
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, initial_state, ht = ctx.saved_tensors
        B, T, H, K = q.shape
        V = v.shape[-1]
        nb = num_blocks(T, ctx.block_size)
        cfg = _launch_config(T, K, V, ctx.block_size)
        precision = _dot_precision(q.device)
        nv = triton.cdiv(V, cfg["BV"])
        grid = (B * H, nv)
        do = do.contiguous()
        flags = dict(USE_G=g is not None, INCLUSIVE=bool(ctx.inclusive), PRECISION=precision, num_warps=4)
        dq_part = torch.empty(nv, B, T, H, K, dtype=torch.float32, device=q.device)
        _block_la_bwd_dq_kernel[grid](
            k,
            v,
            q if g is None else g,
            q if initial_state is None else initial_state,
            do,
            dq_part,
            float(ctx.scale),
            T,
            nb,
            H=H,
            K=K,
            V=V,
            **cfg,
            USE_H0=initial_state is not None,
            **flags,
        )
        dk_part = torch.empty(nv, B, T, H, K, dtype=torch.float32, device=q.device)
        dv = torch.empty(B, T, H, V, dtype=torch.float32, device=q.device)
        dh0 = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
        dht_c = None if dht is None else dht.float().contiguous()
        _block_la_bwd_dkdv_kernel[grid](
            q,
            k,
            v,
            q if g is None else g,
            do,
            q if dht_c is None else dht_c,
            dk_part,
            dv,
            dh0,
            float(ctx.scale),
            T,
            nb,
            H=H,
            K=K,
            V=V,
            **cfg,
            USE_DHT=dht_c is not None,
            **flags,
        )
        dq, dk = dq_part.sum(0), dk_part.sum(0)
        dg = None
        if g is not None and ctx.needs_input_grad[3]:
            dg = _decay_grad(q, k, dq, dk, ht, dht_c, ctx.block_size, ctx.inclusive).to(g.dtype)
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

    Example:
        >>> q = k = torch.randn(1, 512, 4, 64, device="cuda"); v = torch.randn(1, 512, 4, 64, device="cuda")
        >>> o, s = triton_block_la(q, k, v, -torch.rand(1, 2, 4, 64, device="cuda"), 256, output_final_state=True)
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
