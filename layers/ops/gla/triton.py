"""Channel-wise gated linear attention: Triton kernels, forward and backward, in one autograd.Function.

Same function as ``naive_recurrent_gla`` (see ``naive.py``); the math is in README.md beside this
file. The sequence is cut into chunks of ``BT`` tokens and each chunk into sub-chunks of ``BC = 16``
tokens. ``G`` is the cumulative log-decay inside each chunk (fp32, computed on the host and zero-
padded to a whole number of chunks, so the padded tail neither decays nor writes the state).

Forward:

* ``_gla_fwd_state_kernel``, one program per (value tile, batch x head): walks the chunks in order
  with the fp32 state ``S [K, BV]`` in registers, stores the state entering every chunk and updates
  ``S <- diag(exp G_last) S + (K * exp(G_last - G))^T V``.
* ``_gla_fwd_output_kernel``, one program per (sub-chunk, batch x head): ``o = scale * [(q exp G) S_n
  + intra]``; the intra part reads earlier sub-chunks through the reference point ``R = G`` at the
  first token of the sub-chunk (``exp(G_t - R) <= 1``, ``exp(R - G_s) <= 1``) with 16 x 16 dots and
  its own sub-chunk with the exact element-wise decay ``exp(G_t - G_s)``, token by token.

Backward:

* ``_gla_bwd_state_kernel``: the reverse walk of ``dS`` (gradient of the state after each chunk):
  ``dS <- diag(exp G_last) dS + scale (Q exp G)^T dO``; what remains at the start is ``d initial_state``.
* ``_gla_bwd_dqkv_kernel``, per (sub-chunk, batch x head): ``dq, dk, dv`` from the chunk's state,
  ``dS`` after the chunk, earlier sub-chunks (for ``dq``, reference ``R`` = first token), later
  sub-chunks (for ``dk, dv``, reference = last token of the sub-chunk) and the diagonal, exactly.
* ``dg`` on the host from the identity ``dA_t = q_t dq_t - k_t dk_t`` (+ ``rowsum(S_T dS_T)`` at the
  last token), ``dg_t = sum_{u >= t} dA_u`` (README.md).

Interpreter rules (TRITON_INTERPRET=1 on the CPU, layers.md): pointer arithmetic with masks, fp32
``tl.dot`` only (inputs are cast to fp32 after loading), ``tl.cast`` on loop variables, one fixed
launch configuration, dot tiles >= 16. GPU dots use IEEE fp32 unless
``torch.backends.cuda.matmul.allow_tf32`` is set.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from layers.ops.gla.naive import check_chunk_size, check_gla_inputs, resolve_scale

SUB_CHUNK = 16
"""BC: tokens per sub-chunk (the 16 x 16 dot tiles)."""
MAX_HEAD_DIM = 256
"""Largest K and V the kernels take (one register tile per head)."""


@triton.jit
def _gla_fwd_state_kernel(
    k, v, G, h0, hs, ht,
    T, TP, N,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, STORE_FINAL: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = tl.cast(i_bh // H, tl.int64), i_bh % H
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + p_state, mask=m_kv, other=0.0).to(tl.float32)
    for i_n in range(0, N):
        n64 = tl.cast(i_n, tl.int64)
        p_hs = ((tl.cast(i_bh, tl.int64) * N + n64) * K + o_k[:, None]) * V + o_v[None, :]
        tl.store(hs + p_hs, b_h, mask=m_kv)
        t = n64 * BT + o_t
        m_t = t < T
        row = (i_b * T + t) * H + i_h
        b_k = tl.load(k + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_v = tl.load(v + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        row_g = (i_b * TP + t) * H + i_h
        b_g = tl.load(G + row_g[:, None] * K + o_k[None, :], mask=(t < TP)[:, None] & m_k[None, :], other=0.0)
        b_glast = tl.load(G + ((i_b * TP + n64 * BT + BT - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0)
        b_kd = b_k * tl.exp(b_glast[None, :] - b_g)
        b_h = b_h * tl.exp(b_glast)[:, None] + tl.dot(tl.trans(b_kd), b_v, input_precision=PRECISION)
    if STORE_FINAL:
        tl.store(ht + p_state, b_h, mask=m_kv)


@triton.jit
def _gla_fwd_output_kernel(
    q, k, v, G, hs, o,
    scale, T, TP, N,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, NS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_ns, i_bh = tl.program_id(0), tl.program_id(1)
    i_n, i_s = i_ns // NS, i_ns % NS
    i_b, i_h = tl.cast(i_bh // H, tl.int64), i_bh % H
    n64 = tl.cast(i_n, tl.int64)
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    t0 = n64 * BT + tl.cast(i_s, tl.int64) * BC
    t_i = t0 + o_c
    m_i = t_i < T
    row = (i_b * T + t_i) * H + i_h
    b_q = tl.load(q + row[:, None] * K + o_k[None, :], mask=m_i[:, None] & m_k[None, :], other=0.0).to(tl.float32)
    b_G = tl.load(G + ((i_b * TP + t_i) * H + i_h)[:, None] * K + o_k[None, :], mask=m_k[None, :] & (t_i < TP)[:, None], other=0.0)
    p_hs = ((tl.cast(i_bh, tl.int64) * N + n64) * K + o_k[:, None]) * V + o_v[None, :]
    b_h = tl.load(hs + p_hs, mask=m_k[:, None] & m_v[None, :], other=0.0)
    b_o = tl.dot(b_q * tl.exp(b_G), b_h, input_precision=PRECISION)
    # Earlier sub-chunks of this chunk, through the reference point R = G at the first token.
    b_ref = tl.load(G + ((i_b * TP + t0) * H + i_h) * K + o_k, mask=m_k, other=0.0)
    b_qr = b_q * tl.exp(b_G - b_ref[None, :])
    for i_j in range(0, i_s):
        t_j = n64 * BT + tl.cast(i_j, tl.int64) * BC + o_c
        m_j = t_j < T
        row_j = (i_b * T + t_j) * H + i_h
        b_kj = tl.load(k + row_j[:, None] * K + o_k[None, :], mask=m_j[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_vj = tl.load(v + row_j[:, None] * V + o_v[None, :], mask=m_j[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        b_Gj = tl.load(G + ((i_b * TP + t_j) * H + i_h)[:, None] * K + o_k[None, :], mask=m_k[None, :] & (t_j < TP)[:, None], other=0.0)
        b_kr = b_kj * tl.exp(b_ref[None, :] - b_Gj)
        b_a = tl.dot(b_qr, tl.trans(b_kr), input_precision=PRECISION)
        b_o += tl.dot(b_a, b_vj, input_precision=PRECISION)
    # The sub-chunk itself: exact decay exp(G_t - G_c) for t >= c, one key token at a time.
    for i_c in range(0, BC):
        c32 = tl.cast(i_c, tl.int32)
        t_c = t0 + tl.cast(i_c, tl.int64)
        m_kc, m_vc = m_k & (t_c + 0 * o_k < T), m_v & (t_c + 0 * o_v < T)  # vector masks (interpreter)
        row_c = (i_b * T + t_c) * H + i_h
        b_kc = tl.load(k + row_c * K + o_k, mask=m_kc, other=0.0).to(tl.float32)
        b_vc = tl.load(v + row_c * V + o_v, mask=m_vc, other=0.0).to(tl.float32)
        b_gc = tl.load(G + ((i_b * TP + t_c) * H + i_h) * K + o_k, mask=m_k, other=0.0)
        b_e = tl.exp(tl.where((o_c >= c32)[:, None], b_G - b_gc[None, :], float("-inf")))
        b_a = tl.sum(b_q * b_kc[None, :] * b_e, axis=1)
        b_o += b_a[:, None] * b_vc[None, :]
    tl.store(o + row[:, None] * V + o_v[None, :], (b_o * scale).to(o.dtype.element_ty), mask=m_i[:, None] & m_v[None, :])


@triton.jit
def _gla_bwd_state_kernel(
    q, G, do, dht, dhs, dh0,
    scale, T, TP, N,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = tl.cast(i_bh // H, tl.int64), i_bh % H
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :]
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + p_state, mask=m_kv, other=0.0).to(tl.float32)
    for i_r in range(0, N):
        n64 = tl.cast(N - 1 - i_r, tl.int64)
        p_dhs = ((tl.cast(i_bh, tl.int64) * N + n64) * K + o_k[:, None]) * V + o_v[None, :]
        tl.store(dhs + p_dhs, b_dh, mask=m_kv)
        t = n64 * BT + o_t
        m_t = t < T
        row = (i_b * T + t) * H + i_h
        b_q = tl.load(q + row[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_do = tl.load(do + row[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        b_g = tl.load(G + ((i_b * TP + t) * H + i_h)[:, None] * K + o_k[None, :], mask=(t < TP)[:, None] & m_k[None, :], other=0.0)
        b_glast = tl.load(G + ((i_b * TP + n64 * BT + BT - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0)
        b_qd = b_q * tl.exp(b_g)
        b_dh = b_dh * tl.exp(b_glast)[:, None] + scale * tl.dot(tl.trans(b_qd), b_do, input_precision=PRECISION)
    if STORE_DH0:
        tl.store(dh0 + p_state, b_dh, mask=m_kv)


@triton.jit
def _gla_bwd_dqkv_kernel(
    q, k, v, G, hs, dhs, do, dq, dk, dv, da,
    scale, T, TP, N,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, NS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_ns, i_bh = tl.program_id(0), tl.program_id(1)
    i_n, i_s = i_ns // NS, i_ns % NS
    i_b, i_h = tl.cast(i_bh // H, tl.int64), i_bh % H
    n64 = tl.cast(i_n, tl.int64)
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    t0 = n64 * BT + tl.cast(i_s, tl.int64) * BC
    t_i = t0 + o_c
    m_i = t_i < T
    row = (i_b * T + t_i) * H + i_h
    m_ik, m_iv = m_i[:, None] & m_k[None, :], m_i[:, None] & m_v[None, :]
    b_k = tl.load(k + row[:, None] * K + o_k[None, :], mask=m_ik, other=0.0).to(tl.float32)
    b_v = tl.load(v + row[:, None] * V + o_v[None, :], mask=m_iv, other=0.0).to(tl.float32)
    b_do = tl.load(do + row[:, None] * V + o_v[None, :], mask=m_iv, other=0.0).to(tl.float32)
    b_G = tl.load(G + ((i_b * TP + t_i) * H + i_h)[:, None] * K + o_k[None, :], mask=m_k[None, :] & (t_i < TP)[:, None], other=0.0)
    b_glast = tl.load(G + ((i_b * TP + n64 * BT + BT - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0)
    p_hs = ((tl.cast(i_bh, tl.int64) * N + n64) * K + o_k[:, None]) * V + o_v[None, :]
    b_h = tl.load(hs + p_hs, mask=m_k[:, None] & m_v[None, :], other=0.0)
    b_dh = tl.load(dhs + p_hs, mask=m_k[:, None] & m_v[None, :], other=0.0)
    # Inter-chunk: the state entering the chunk and dS after it.
    b_dq = scale * tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION) * tl.exp(b_G)
    b_to_end = tl.exp(b_glast[None, :] - b_G)
    b_dk_inter = tl.dot(b_v, tl.trans(b_dh), input_precision=PRECISION) * b_to_end
    b_dv = tl.dot(b_k * b_to_end, b_dh, input_precision=PRECISION)
    # dq from earlier sub-chunks, reference R = G at the first token of this sub-chunk.
    b_ref = tl.load(G + ((i_b * TP + t0) * H + i_h) * K + o_k, mask=m_k, other=0.0)
    b_acc = tl.zeros([BC, BK], dtype=tl.float32)
    for i_j in range(0, i_s):
        t_j = n64 * BT + tl.cast(i_j, tl.int64) * BC + o_c
        m_j = t_j < T
        row_j = (i_b * T + t_j) * H + i_h
        b_kj = tl.load(k + row_j[:, None] * K + o_k[None, :], mask=m_j[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_vj = tl.load(v + row_j[:, None] * V + o_v[None, :], mask=m_j[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        b_Gj = tl.load(G + ((i_b * TP + t_j) * H + i_h)[:, None] * K + o_k[None, :], mask=m_k[None, :] & (t_j < TP)[:, None], other=0.0)
        b_da = tl.dot(b_do, tl.trans(b_vj), input_precision=PRECISION)
        b_acc += tl.dot(b_da, b_kj * tl.exp(b_ref[None, :] - b_Gj), input_precision=PRECISION)
    b_dq += scale * b_acc * tl.exp(b_G - b_ref[None, :])
    # dk, dv from later sub-chunks, reference R' = G at the last token of this sub-chunk.
    b_ref2 = tl.load(G + ((i_b * TP + t0 + BC - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0)
    b_kr = b_k * tl.exp(b_ref2[None, :] - b_G)
    b_acc = tl.zeros([BC, BK], dtype=tl.float32)
    for i_j in range(i_s + 1, NS):
        t_j = n64 * BT + tl.cast(i_j, tl.int64) * BC + o_c
        m_j = t_j < T
        row_j = (i_b * T + t_j) * H + i_h
        b_qj = tl.load(q + row_j[:, None] * K + o_k[None, :], mask=m_j[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_doj = tl.load(do + row_j[:, None] * V + o_v[None, :], mask=m_j[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        b_Gj = tl.load(G + ((i_b * TP + t_j) * H + i_h)[:, None] * K + o_k[None, :], mask=m_k[None, :] & (t_j < TP)[:, None], other=0.0)
        b_qr = b_qj * tl.exp(b_Gj - b_ref2[None, :])
        b_da_t = tl.dot(b_v, tl.trans(b_doj), input_precision=PRECISION)  # [s, t] = do_t . v_s
        b_acc += tl.dot(b_da_t, b_qr, input_precision=PRECISION)
        b_a_t = tl.dot(b_kr, tl.trans(b_qr), input_precision=PRECISION)  # [s, t] = score of t on s
        b_dv += scale * tl.dot(b_a_t, b_doj, input_precision=PRECISION)
    b_dk = scale * b_acc * tl.exp(b_ref2[None, :] - b_G)
    # The diagonal sub-block, exactly: token c as key (for dq) and as query (for dk, dv). The pair
    # (t, t) has no decay and enters q dq and k dk identically: it is kept apart for dA.
    b_dq_diag = tl.zeros([BC, BK], dtype=tl.float32)
    b_dk_diag = tl.zeros([BC, BK], dtype=tl.float32)
    for i_c in range(0, BC):
        c32 = tl.cast(i_c, tl.int32)
        t_c = t0 + tl.cast(i_c, tl.int64)
        m_kc, m_vc = m_k & (t_c + 0 * o_k < T), m_v & (t_c + 0 * o_v < T)  # vector masks (interpreter)
        row_c = (i_b * T + t_c) * H + i_h
        b_qc = tl.load(q + row_c * K + o_k, mask=m_kc, other=0.0).to(tl.float32)
        b_kc = tl.load(k + row_c * K + o_k, mask=m_kc, other=0.0).to(tl.float32)
        b_vc = tl.load(v + row_c * V + o_v, mask=m_vc, other=0.0).to(tl.float32)
        b_doc = tl.load(do + row_c * V + o_v, mask=m_vc, other=0.0).to(tl.float32)
        b_gc = tl.load(G + ((i_b * TP + t_c) * H + i_h) * K + o_k, mask=m_k, other=0.0)
        m_self = (o_c == c32)[:, None]
        b_e_q = tl.exp(tl.where((o_c >= c32)[:, None], b_G - b_gc[None, :], float("-inf")))
        b_t = scale * tl.sum(b_do * b_vc[None, :], axis=1)[:, None] * b_kc[None, :] * b_e_q
        b_dq += tl.where(m_self, 0.0, b_t)
        b_dq_diag += tl.where(m_self, b_t, 0.0)
        b_e_k = tl.exp(tl.where((o_c <= c32)[:, None], b_gc[None, :] - b_G, float("-inf")))
        b_t = scale * tl.sum(b_v * b_doc[None, :], axis=1)[:, None] * b_qc[None, :] * b_e_k
        b_dk += tl.where(m_self, 0.0, b_t)
        b_dk_diag += tl.where(m_self, b_t, 0.0)
        b_dv += scale * tl.sum(b_qc[None, :] * b_k * b_e_k, axis=1)[:, None] * b_doc[None, :]
    # dA_t = q_t dq_t - k_t dk_t over the pairs that span a decay: without (t, t) and, for the last
    # token, without its write read by the final state (the host adds that term exactly).
    b_q = tl.load(q + row[:, None] * K + o_k[None, :], mask=m_ik, other=0.0).to(tl.float32)
    b_dk_span = b_dk + tl.where((t_i == T - 1)[:, None], 0.0, b_dk_inter)
    tl.store(da + row[:, None] * K + o_k[None, :], b_q * b_dq - b_k * b_dk_span, mask=m_ik)
    tl.store(dq + row[:, None] * K + o_k[None, :], b_dq + b_dq_diag, mask=m_ik)
    tl.store(dk + row[:, None] * K + o_k[None, :], b_dk + b_dk_diag + b_dk_inter, mask=m_ik)
    tl.store(dv + row[:, None] * V + o_v[None, :], b_dv, mask=m_iv)


def _precision() -> str:
    if os.environ.get("TRITON_INTERPRET") == "1" or not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _chunk_log_decay(g: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, int]:
    """G: cumulative log-decay inside each chunk, fp32 [B, TP, H, K] (TP = T padded to chunks)."""
    B, T, H, K = g.shape
    N = triton.cdiv(T, chunk_size)
    gp = torch.nn.functional.pad(g.float(), (0, 0, 0, 0, 0, N * chunk_size - T))
    return gp.view(B, N, chunk_size, H, K).cumsum(2).view(B, N * chunk_size, H, K).contiguous(), N


def _final_state_term(k, v, g, G, hs, dht, chunk_size):
    """``rowsum(exp(g_{T-1}) S_{T-2} * dht)`` [B, H, K]: S_{T-2} = the state before the last token's
    decay, rebuilt from the state entering the last chunk (every exponent <= 0)."""
    T = k.shape[1]
    t0 = (hs.shape[2] - 1) * chunk_size
    s_prev = hs[:, :, -1]  # [B, H, K, V]
    if T - 1 > t0:
        G_ref = G[:, T - 2]  # [B, H, K]
        k_dec = k[:, t0:T - 1].float() * torch.exp(G_ref.unsqueeze(1) - G[:, t0:T - 1])
        s_prev = torch.exp(G_ref).unsqueeze(-1) * s_prev + torch.einsum("blhk,blhv->bhkv", k_dec, v[:, t0:T - 1].float())
    return torch.exp(g[:, T - 1].float()) * (s_prev * dht).sum(-1)


class TritonGLAFunction(torch.autograd.Function):
    """Forward and backward of chunked GLA by the Triton kernels (inputs checked by the caller)."""

    @staticmethod
    def forward(ctx, q, k, v, g, initial_state, scale, output_final_state, chunk_size):
        B, T, H, K = q.shape
        V = v.shape[-1]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        G, N = _chunk_log_decay(g, chunk_size)
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        hs = torch.empty(B, H, N, K, V, dtype=torch.float32, device=q.device)
        ht = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
        o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
        BK, BV = max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))
        NS = chunk_size // SUB_CHUNK
        prec = _precision()
        _gla_fwd_state_kernel[(1, B * H)](
            k, v, G, h0, hs, ht, T, N * chunk_size, N, H=H, K=K, V=V, BT=chunk_size, BK=BK, BV=BV,
            USE_H0=h0 is not None, STORE_FINAL=output_final_state, PRECISION=prec, num_warps=4,
        )
        _gla_fwd_output_kernel[(N * NS, B * H)](
            q, k, v, G, hs, o, scale, T, N * chunk_size, N, H=H, K=K, V=V, BT=chunk_size, BC=SUB_CHUNK,
            NS=NS, BK=BK, BV=BV, PRECISION=prec, num_warps=4,
        )
        ctx.save_for_backward(q, k, v, g, G, h0, hs)
        ctx.scale, ctx.chunk_size, ctx.g_dtype = scale, chunk_size, g.dtype
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, G, h0, hs = ctx.saved_tensors
        B, T, H, K = q.shape
        V = v.shape[-1]
        BT, N = ctx.chunk_size, hs.shape[2]
        BK, BV = max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))
        NS = BT // SUB_CHUNK
        prec = _precision()
        do = do.contiguous()
        dhs = torch.empty_like(hs)
        dh0 = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device) if h0 is not None else None
        use_dht = dht is not None
        _gla_bwd_state_kernel[(1, B * H)](
            q, G, do, dht.float().contiguous() if use_dht else None, dhs, dh0, ctx.scale, T, N * BT, N,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, USE_DHT=use_dht, STORE_DH0=dh0 is not None,
            PRECISION=prec, num_warps=4,
        )
        dq = torch.empty(B, T, H, K, dtype=torch.float32, device=q.device)
        dk = torch.empty_like(dq)
        dv = torch.empty(B, T, H, V, dtype=torch.float32, device=q.device)
        d_a = torch.empty_like(dq)
        _gla_bwd_dqkv_kernel[(N * NS, B * H)](
            q, k, v, G, hs, dhs, do, dq, dk, dv, d_a, ctx.scale, T, N * BT, N, H=H, K=K, V=V, BT=BT,
            BC=SUB_CHUNK, NS=NS, BK=BK, BV=BV, PRECISION=prec, num_warps=4,
        )
        # dg_t = sum_{u >= t} dA_u (README.md); the final state adds, at the last token, the read of
        # everything written before it: rowsum(exp(g_{T-1}) S_{T-2} * dS_T).
        if use_dht:
            d_a[:, -1] += _final_state_term(k, v, g, G, hs, dht.float(), BT)
        dg = d_a.flip(1).cumsum(1).flip(1)
        dh0_out = dh0.to(ctx.h0_dtype) if dh0 is not None else None
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg.to(ctx.g_dtype), dh0_out, None, None, None


def check_triton_launch(
    op: str, module: str, q: torch.Tensor, v: torch.Tensor, chunk_size: int, max_head_dim: int,
    max_chunk: int | None = None,
) -> None:
    """The limits of a Triton backend (shared by the ops' kernels): a power-of-two chunk size of at
    least ``SUB_CHUNK`` (and at most ``max_chunk``), K and V at most ``max_head_dim``, CUDA tensors or
    the interpreter. Raises ValueError naming the argument (``op``: the message prefix, ``module``:
    the module of the kernels)."""
    check_chunk_size(chunk_size)
    if chunk_size < SUB_CHUNK or (max_chunk is not None and chunk_size > max_chunk):
        need = f"chunk_size >= {SUB_CHUNK}" if max_chunk is None else f"{SUB_CHUNK} <= chunk_size <= {max_chunk}"
        raise ValueError(f"{op}: the triton backend needs {need}, got {chunk_size}")
    if q.shape[-1] > max_head_dim or v.shape[-1] > max_head_dim:
        raise ValueError(
            f"{op}: the triton backend takes K, V <= {max_head_dim}, got K={q.shape[-1]}, V={v.shape[-1]};"
            " use backend='torch' or split the heads"
        )
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"{op}: the triton backend needs CUDA tensors, or TRITON_INTERPRET=1 set before {module}"
            f" is imported (got tensors on {q.device})"
        )


def triton_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked gated linear attention by the Triton kernels (CUDA, or the interpreter on the CPU).

    Args and result as :func:`layers.ops.gla.chunk_gla`; ``chunk_size`` a power of two >= 16, K and V
    at most 256.

    Example (needs CUDA, so not run by the doctests; the CPU path is ``chunk_gla``'s example):
        >>> q = k = torch.randn(1, 100, 2, 32, device="cuda")                # doctest: +SKIP
        >>> v = torch.randn(1, 100, 2, 32, device="cuda")                    # doctest: +SKIP
        >>> g = -torch.rand(1, 100, 2, 32, device="cuda") / 16               # doctest: +SKIP
        >>> o, s = triton_gla(q, k, v, g, output_final_state=True)           # doctest: +SKIP
    """
    check_gla_inputs(q, k, v, g, initial_state, check_decay_values=not q.is_cuda)
    check_triton_launch("gla", __name__, q, v, chunk_size, MAX_HEAD_DIM)
    scale = resolve_scale(scale, q.shape[-1])
    B, T, H, K = q.shape
    if T == 0:
        state = initial_state.float() if initial_state is not None else q.new_zeros(B, H, K, v.shape[-1],
                                                                                       dtype=torch.float32)
        return q.new_zeros(B, 0, H, v.shape[-1]), (state if output_final_state else None)
    o, ht = TritonGLAFunction.apply(q, k, v, g, initial_state, scale, output_final_state, chunk_size)
    return o, ht
