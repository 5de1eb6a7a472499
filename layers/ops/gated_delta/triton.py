"""Gated delta rule (per-channel decay): Triton kernels, forward and backward, in one autograd.Function.

Same function as ``naive_recurrent_gated_delta``; the chunked (WY / UT) form and its backward are
derived in README.md beside this file, and ``chunk.py`` is the same algorithm in torch. The host packs
every input to fp32 ``[B * H, TP, D]`` (TP = T padded to whole chunks of ``BT`` tokens with zeros:
a padded token has ``k = q = v = 0``, ``beta = 0``, ``g = 0``, so it neither decays nor writes), and
computes ``G``, the cumulative log-decay inside each chunk. A chunk is cut into sub-chunks of
``BC = 16`` tokens.

Forward:

* ``_gd_fwd_scores_kernel`` (sub-chunk, batch x head): rows of the chunk's decayed score matrices
  ``A_qk[t, s] = (q_t exp(G_t - G_s)) . k_s`` (s <= t) and ``A_kk`` (s < t). Earlier sub-chunks are
  read through the reference point ``R = G`` at the sub-chunk's first token (16 x 16 dots, both
  factors ``exp(G_t - R)``, ``exp(R - G_s)`` <= 1); the sub-chunk itself with the exact element-wise
  decay, one key token at a time; so no exponent is ever positive.
* ``_gd_fwd_solve_kernel`` (chunk, batch x head): the UT transform. ``M = (I + diag(beta) A_kk)^-1`` by
  forward substitution, then ``W_v = M diag(beta) V`` and ``W_k = M diag(beta) (K exp G)``.
* ``_gd_fwd_state_kernel`` (value tile, batch x head): the inter-chunk recurrence with the fp32 state
  in registers: stores ``S_n``, ``U_n = W_v - W_k S_n`` and updates
  ``S <- diag(exp G_last) S + (K exp(G_last - G))^T U_n``.
* ``_gd_fwd_output_kernel`` (chunk, batch x head): ``o = scale [(Q exp G) S_n + A_qk U_n]``.

Backward (hand-written; README.md, "Backward"):

* ``_gd_bwd_state_kernel``: the reverse walk of ``dS`` (gradient of the state after each chunk),
  storing ``dU_n = scale A_qk^T dO + (K exp(G_last - G)) dS`` and
  ``dS <- diag(exp G_last) dS + scale (Q exp G)^T dO - W_k^T dU_n``; what remains is d initial_state.
* ``_gd_bwd_chunk_kernel`` (chunk): the transposed solve ``dR~ = M^T dU``, dbeta, dv, the state-read and
  state-write parts of dq, dk, the decay gradient of every pair that spans a chunk boundary, and the
  gradient ``D_kk`` of ``A_kk``.
* ``_gd_bwd_pairs_kernel`` (sub-chunk): the decayed pair sums of ``D_qk = scale dO U^T`` and ``D_kk``
  into dq, dk and the decay gradient, with the same reference points as the forward.
* dg on the host: the reverse cumulative sum of ``dG`` inside each chunk.

Interpreter rules (TRITON_INTERPRET=1 on the CPU, layers.md): pointer arithmetic with masks, fp32
``tl.dot`` only (inputs are packed to fp32), ``tl.cast`` on loop variables, one fixed launch
configuration, dot tiles >= 16. GPU dots use IEEE fp32 unless ``torch.backends.cuda.matmul.allow_tf32``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from layers.ops.gated_delta.naive import check_gated_delta_inputs
from layers.ops.gla.naive import resolve_scale
from layers.ops.gla.triton import SUB_CHUNK, _precision, check_triton_launch

MAX_HEAD_DIM = 128
"""Largest K and V the kernels take (one register tile per head; the chunk kernel holds several)."""
SCAN_VALUE_TILE = 32
"""Value columns per program of the two scan kernels (the state recurrence is independent per value
column, so B * H * V / 32 programs walk the chunks instead of B * H)."""
MAX_CHUNK = 64
"""Largest chunk (the UT solve keeps the C x C inverse in registers)."""


@triton.jit
def _chunk_offsets(
    i_bh, i_n, v0, TP, N,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):
    """Offsets of chunk ``i_n`` of head ``i_bh`` in the packed buffers (value columns from ``v0``): the
    row of its first token in ``[B * H * TP]``, its ``[BT, BK]`` / ``[BT, BV]`` tiles of
    ``[B * H * TP, K | V]``, its ``[BT, BT]`` tile of ``[B * H, N, BT, BT]``, its ``[BK, BV]`` state of
    ``[B * H, N, K, V]``; the channel masks."""
    bh, n64 = tl.cast(i_bh, tl.int64), tl.cast(i_n, tl.int64)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = v0 + tl.arange(0, BV)
    row0 = bh * TP + n64 * BT
    p_k = (row0 + o_t)[:, None] * K + o_k[None, :]
    p_v = (row0 + o_t)[:, None] * V + o_v[None, :]
    p_a = ((bh * N + n64) * BT + o_t)[:, None] * BT + o_t[None, :]
    p_s = ((bh * N + n64) * K + o_k[:, None]) * V + o_v[None, :]
    return row0, p_k, p_v, p_a, p_s, o_k < K, o_v < V


@triton.jit
def _gd_fwd_scores_kernel(
    q, k, G, a_qk, a_kk,
    TP, N,
    K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, NS: tl.constexpr, BK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_ns, i_bh = tl.program_id(0), tl.program_id(1)
    i_n, i_s = i_ns // NS, i_ns % NS
    bh, n64, s64 = tl.cast(i_bh, tl.int64), tl.cast(i_n, tl.int64), tl.cast(i_s, tl.int64)
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    t0 = bh * TP + n64 * BT + s64 * BC  # row of the sub-chunk's first token in [B * H * TP]
    p_i = (t0 + o_c)[:, None] * K + o_k[None, :]
    b_q = tl.load(q + p_i, mask=m_k[None, :], other=0.0)
    b_k = tl.load(k + p_i, mask=m_k[None, :], other=0.0)
    b_G = tl.load(G + p_i, mask=m_k[None, :], other=0.0)
    p_a = ((bh * N + n64) * BT + s64 * BC + o_c)[:, None] * BT  # rows of this sub-chunk in [BT, BT]
    # Earlier sub-chunks, through R = G at the first token (both factors <= 1).
    b_ref = tl.load(G + t0 * K + o_k, mask=m_k, other=0.0)
    b_e = tl.exp(b_G - b_ref[None, :])
    b_qr, b_kr = b_q * b_e, b_k * b_e
    for i_j in range(0, i_s):
        j64 = tl.cast(i_j, tl.int64)
        p_j = (bh * TP + n64 * BT + j64 * BC + o_c)[:, None] * K + o_k[None, :]
        b_kj = tl.load(k + p_j, mask=m_k[None, :], other=0.0)
        b_kj = b_kj * tl.exp(b_ref[None, :] - tl.load(G + p_j, mask=m_k[None, :], other=0.0))
        p_out = p_a + (j64 * BC + o_c)[None, :]
        tl.store(a_qk + p_out, tl.dot(b_qr, tl.trans(b_kj), input_precision=PRECISION))
        tl.store(a_kk + p_out, tl.dot(b_kr, tl.trans(b_kj), input_precision=PRECISION))
    # The sub-chunk itself: exact decay exp(G_t - G_c) for t >= c, one key token c at a time.
    b_aqk = tl.zeros([BC, BC], dtype=tl.float32)
    b_akk = tl.zeros([BC, BC], dtype=tl.float32)
    for i_c in range(0, BC):
        c32 = tl.cast(i_c, tl.int32)
        p_c = (t0 + tl.cast(i_c, tl.int64)) * K + o_k
        b_kc = tl.load(k + p_c, mask=m_k, other=0.0)
        b_gc = tl.load(G + p_c, mask=m_k, other=0.0)
        b_kce = b_kc[None, :] * tl.exp(tl.where((o_c >= c32)[:, None], b_G - b_gc[None, :], float("-inf")))
        m_col = (o_c == c32)[None, :]
        b_aqk = tl.where(m_col, tl.sum(b_q * b_kce, axis=1)[:, None], b_aqk)
        b_akk = tl.where(m_col & (o_c > c32)[:, None], tl.sum(b_k * b_kce, axis=1)[:, None], b_akk)
    p_out = p_a + (s64 * BC + o_c)[None, :]
    tl.store(a_qk + p_out, b_aqk)
    tl.store(a_kk + p_out, b_akk)
    b_zero = tl.zeros([BC, BC], dtype=tl.float32)
    for i_j in range(i_s + 1, NS):
        p_out = p_a + (tl.cast(i_j, tl.int64) * BC + o_c)[None, :]
        tl.store(a_qk + p_out, b_zero)
        tl.store(a_kk + p_out, b_zero)


@triton.jit
def _gd_fwd_solve_kernel(
    k, v, beta, G, a_kk, minv, w_k, w_v,
    TP, N,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    row0, p_k, p_v, p_a, _, m_k, m_v = _chunk_offsets(i_bh, i_n, 0, TP, N, K, V, BT, BK, BV)
    o_t = tl.arange(0, BT)
    b_beta = tl.load(beta + row0 + o_t)
    b_l = tl.load(a_kk + p_a) * b_beta[:, None]  # strictly lower
    # M = (I + L)^-1 row by row: M_i = e_i - sum_{s < i} L[i, s] M_s (rows s < i are final).
    b_m = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0)
    for i in range(1, BT):
        m_row = (o_t == tl.cast(i, tl.int32))[:, None]
        b_li = tl.sum(tl.where(m_row, b_l, 0.0), axis=0)  # L[i, :]
        b_mi = tl.sum(tl.where(m_row, b_m, 0.0), axis=0) - tl.sum(b_li[:, None] * b_m, axis=0)
        b_m = tl.where(m_row, b_mi[None, :], b_m)
    tl.store(minv + p_a, b_m)
    b_kd = tl.load(k + p_k, mask=m_k[None, :], other=0.0) * tl.exp(tl.load(G + p_k, mask=m_k[None, :], other=0.0))
    tl.store(w_k + p_k, tl.dot(b_m, b_kd * b_beta[:, None], input_precision=PRECISION), mask=m_k[None, :])
    b_v = tl.load(v + p_v, mask=m_v[None, :], other=0.0)
    tl.store(w_v + p_v, tl.dot(b_m, b_v * b_beta[:, None], input_precision=PRECISION), mask=m_v[None, :])


@triton.jit
def _gd_fwd_state_kernel(
    k, G, w_k, w_v, u, h0, hs, ht,
    TP, N,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, STORE_FINAL: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)  # value columns are independent: one tile each
    v0 = i_v * BV
    o_k, o_v = tl.arange(0, BK), v0 + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :]  # [BK, BV] of [B * H, K, V]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + p_state, mask=m_kv, other=0.0)
    for i_n in range(0, N):
        row0, p_k, p_v, _, p_s, _, _ = _chunk_offsets(i_bh, i_n, v0, TP, N, K, V, BT, BK, BV)
        tl.store(hs + p_s, b_h, mask=m_kv)
        b_wk = tl.load(w_k + p_k, mask=m_k[None, :], other=0.0)
        b_u = tl.load(w_v + p_v, mask=m_v[None, :], other=0.0) - tl.dot(b_wk, b_h, input_precision=PRECISION)
        tl.store(u + p_v, b_u, mask=m_v[None, :])
        b_k = tl.load(k + p_k, mask=m_k[None, :], other=0.0)
        b_g = tl.load(G + p_k, mask=m_k[None, :], other=0.0)
        b_glast = tl.load(G + (row0 + BT - 1) * K + tl.arange(0, BK), mask=m_k, other=0.0)
        b_kw = b_k * tl.exp(b_glast[None, :] - b_g)
        b_h = b_h * tl.exp(b_glast)[:, None] + tl.dot(tl.trans(b_kw), b_u, input_precision=PRECISION)
    if STORE_FINAL:
        tl.store(ht + p_state, b_h, mask=m_kv)


@triton.jit
def _gd_fwd_output_kernel(
    q, G, hs, a_qk, u, o,
    scale, TP, N,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    _, p_k, p_v, p_a, p_s, m_k, m_v = _chunk_offsets(i_bh, i_n, 0, TP, N, K, V, BT, BK, BV)
    b_qd = tl.load(q + p_k, mask=m_k[None, :], other=0.0) * tl.exp(tl.load(G + p_k, mask=m_k[None, :], other=0.0))
    b_h = tl.load(hs + p_s, mask=m_k[:, None] & m_v[None, :], other=0.0)
    b_a = tl.load(a_qk + p_a)
    b_u = tl.load(u + p_v, mask=m_v[None, :], other=0.0)
    b_o = tl.dot(b_qd, b_h, input_precision=PRECISION) + tl.dot(b_a, b_u, input_precision=PRECISION)
    tl.store(o + p_v, scale * b_o, mask=m_v[None, :])


@triton.jit
def _gd_bwd_state_kernel(
    q, k, G, w_k, a_qk, do, dht, dhs, du, dh0,
    scale, TP, N,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)  # value columns are independent: one tile each
    v0 = i_v * BV
    o_k, o_v = tl.arange(0, BK), v0 + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (tl.cast(i_bh, tl.int64) * K + o_k[:, None]) * V + o_v[None, :]  # [BK, BV] of [B * H, K, V]
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + p_state, mask=m_kv, other=0.0)
    for i_r in range(0, N):
        row0, p_k, p_v, p_a, p_s, _, _ = _chunk_offsets(i_bh, N - 1 - i_r, v0, TP, N, K, V, BT, BK, BV)
        tl.store(dhs + p_s, b_dh, mask=m_kv)
        b_a = tl.load(a_qk + p_a)
        b_do = tl.load(do + p_v, mask=m_v[None, :], other=0.0)
        b_g = tl.load(G + p_k, mask=m_k[None, :], other=0.0)
        b_glast = tl.load(G + (row0 + BT - 1) * K + tl.arange(0, BK), mask=m_k, other=0.0)
        b_kw = tl.load(k + p_k, mask=m_k[None, :], other=0.0) * tl.exp(b_glast[None, :] - b_g)
        b_du = scale * tl.dot(tl.trans(b_a), b_do, input_precision=PRECISION)
        b_du += tl.dot(b_kw, b_dh, input_precision=PRECISION)
        tl.store(du + p_v, b_du, mask=m_v[None, :])
        b_qd = tl.load(q + p_k, mask=m_k[None, :], other=0.0) * tl.exp(b_g)
        b_wk = tl.load(w_k + p_k, mask=m_k[None, :], other=0.0)
        b_dh = b_dh * tl.exp(b_glast)[:, None] + scale * tl.dot(tl.trans(b_qd), b_do, input_precision=PRECISION)
        b_dh -= tl.dot(tl.trans(b_wk), b_du, input_precision=PRECISION)
    if STORE_DH0:
        tl.store(dh0 + p_state, b_dh, mask=m_kv)


@triton.jit
def _gd_bwd_chunk_kernel(
    q, k, v, beta, G, hs, dhs, u, du, minv, a_kk, do,
    dq, dk, dv, dg, dbeta, d_kk,
    scale, T, TP, N,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    row0, p_k, p_v, p_a, p_s, m_k, m_v = _chunk_offsets(i_bh, i_n, 0, TP, N, K, V, BT, BK, BV)
    o_t = tl.arange(0, BT)
    rows = row0 + o_t
    m_kv = m_k[:, None] & m_v[None, :]
    b_q = tl.load(q + p_k, mask=m_k[None, :], other=0.0)
    b_k = tl.load(k + p_k, mask=m_k[None, :], other=0.0)
    b_g = tl.load(G + p_k, mask=m_k[None, :], other=0.0)
    b_glast = tl.load(G + (row0 + BT - 1) * K + tl.arange(0, BK), mask=m_k, other=0.0)
    b_v = tl.load(v + p_v, mask=m_v[None, :], other=0.0)
    b_u = tl.load(u + p_v, mask=m_v[None, :], other=0.0)
    b_do = tl.load(do + p_v, mask=m_v[None, :], other=0.0)
    b_h = tl.load(hs + p_s, mask=m_kv, other=0.0)
    b_dh = tl.load(dhs + p_s, mask=m_kv, other=0.0)
    b_beta = tl.load(beta + rows)
    # U = M diag(beta) R with R = V - (K exp G) S_n: back through the solve (dR~ = M^T dU).
    b_drb = tl.dot(tl.trans(tl.load(minv + p_a)), tl.load(du + p_v, mask=m_v[None, :], other=0.0),
                   input_precision=PRECISION)
    b_eg = tl.exp(b_g)
    b_kd = b_k * b_eg
    b_res = b_v - tl.dot(b_kd, b_h, input_precision=PRECISION)
    b_dl = tl.where(o_t[:, None] > o_t[None, :], -tl.dot(b_drb, tl.trans(b_u), input_precision=PRECISION), 0.0)
    b_dbeta = tl.sum(b_res * b_drb, axis=1) + tl.sum(tl.load(a_kk + p_a) * b_dl, axis=1)
    tl.store(dbeta + rows, b_dbeta)
    tl.store(d_kk + p_a, b_beta[:, None] * b_dl)
    b_dr = b_beta[:, None] * b_drb
    tl.store(dv + p_v, b_dr, mask=m_v[None, :])
    b_dkd = -tl.dot(b_dr, tl.trans(b_h), input_precision=PRECISION)
    b_dqd = scale * tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION)
    b_eend = tl.exp(b_glast[None, :] - b_g)
    b_dkw = tl.dot(b_u, tl.trans(b_dh), input_precision=PRECISION)
    tl.store(dq + p_k, b_dqd * b_eg, mask=m_k[None, :])
    tl.store(dk + p_k, b_dkd * b_eg + b_dkw * b_eend, mask=m_k[None, :])
    # Decay gradient of the pairs that span a chunk boundary. The write of the chunk's last real token
    # into the state after the chunk spans no decay: it is left out (its +x and -x would cancel).
    m_last = (o_t == tl.minimum(BT, T - i_n * BT) - 1)[:, None]
    b_w = tl.where(m_last, 0.0, b_k * b_eend * b_dkw)
    b_dlast = tl.sum(b_w, axis=0) + tl.exp(b_glast) * tl.sum(b_h * b_dh, axis=1)
    b_dg = b_q * b_eg * b_dqd + b_kd * b_dkd - b_w + tl.where(m_last, b_dlast[None, :], 0.0)
    tl.store(dg + p_k, b_dg, mask=m_k[None, :])


@triton.jit
def _gd_bwd_pairs_kernel(
    q, k, G, u, do, d_kk, dq, dk, dg,
    scale, TP, N,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, NS: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):
    i_ns, i_bh = tl.program_id(0), tl.program_id(1)
    i_n, i_s = i_ns // NS, i_ns % NS
    bh, n64, s64 = tl.cast(i_bh, tl.int64), tl.cast(i_n, tl.int64), tl.cast(i_s, tl.int64)
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    t0 = bh * TP + n64 * BT + s64 * BC
    p_k = (t0 + o_c)[:, None] * K + o_k[None, :]
    p_v = (t0 + o_c)[:, None] * V + o_v[None, :]
    b_q = tl.load(q + p_k, mask=m_k[None, :], other=0.0)
    b_k = tl.load(k + p_k, mask=m_k[None, :], other=0.0)
    b_G = tl.load(G + p_k, mask=m_k[None, :], other=0.0)
    b_u = tl.load(u + p_v, mask=m_v[None, :], other=0.0)
    b_do = tl.load(do + p_v, mask=m_v[None, :], other=0.0)
    p_d = ((bh * N + n64) * BT + s64 * BC + o_c)[:, None] * BT  # this sub-chunk's rows of D_kk
    # Rows t of this sub-chunk against earlier sub-chunks s, through R = G at the first token.
    b_ref = tl.load(G + t0 * K + o_k, mask=m_k, other=0.0)
    b_xqk = tl.zeros([BC, BK], dtype=tl.float32)
    b_xkk = tl.zeros([BC, BK], dtype=tl.float32)
    for i_j in range(0, i_s):
        j64 = tl.cast(i_j, tl.int64)
        r_j = bh * TP + n64 * BT + j64 * BC + o_c
        p_kj = r_j[:, None] * K + o_k[None, :]
        b_kj = tl.load(k + p_kj, mask=m_k[None, :], other=0.0)
        b_kj = b_kj * tl.exp(b_ref[None, :] - tl.load(G + p_kj, mask=m_k[None, :], other=0.0))
        b_uj = tl.load(u + r_j[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0.0)
        b_dqk = scale * tl.dot(b_do, tl.trans(b_uj), input_precision=PRECISION)  # D_qk[t, s]
        b_dkk = tl.load(d_kk + p_d + (j64 * BC + o_c)[None, :])  # D_kk[t, s]
        b_xqk += tl.dot(b_dqk, b_kj, input_precision=PRECISION)
        b_xkk += tl.dot(b_dkk, b_kj, input_precision=PRECISION)
    b_eref = tl.exp(b_G - b_ref[None, :])
    b_xqk = b_xqk * b_eref
    b_xkk = b_xkk * b_eref
    # Columns s of this sub-chunk against later sub-chunks t, through R' = G at the last token.
    b_ref2 = tl.load(G + (t0 + BC - 1) * K + o_k, mask=m_k, other=0.0)
    b_y = tl.zeros([BC, BK], dtype=tl.float32)
    for i_j in range(i_s + 1, NS):
        j64 = tl.cast(i_j, tl.int64)
        r_j = bh * TP + n64 * BT + j64 * BC + o_c
        p_kj = r_j[:, None] * K + o_k[None, :]
        b_e = tl.exp(tl.load(G + p_kj, mask=m_k[None, :], other=0.0) - b_ref2[None, :])
        b_qj = tl.load(q + p_kj, mask=m_k[None, :], other=0.0) * b_e
        b_kj = tl.load(k + p_kj, mask=m_k[None, :], other=0.0) * b_e
        b_doj = tl.load(do + r_j[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0.0)
        b_dqk_t = scale * tl.dot(b_u, tl.trans(b_doj), input_precision=PRECISION)  # [s, t] = D_qk[t, s]
        p_dj = ((bh * N + n64) * BT + j64 * BC + o_c)[:, None] * BT + (s64 * BC + o_c)[None, :]
        b_dkk_t = tl.trans(tl.load(d_kk + p_dj))  # [s, t] = D_kk[t, s]
        b_y += tl.dot(b_dqk_t, b_qj, input_precision=PRECISION)
        b_y += tl.dot(b_dkk_t, b_kj, input_precision=PRECISION)
    b_y = b_y * tl.exp(b_ref2[None, :] - b_G)
    # The diagonal sub-block, exactly, token c as the column (rows t >= c) and as the row (columns
    # s <= c). The pair (t, t) of A_qk has no decay: kept apart from the decay gradient.
    b_dkk_ii = tl.load(d_kk + p_d + (s64 * BC + o_c)[None, :])
    b_xdiag = tl.zeros([BC, BK], dtype=tl.float32)
    b_ydiag = tl.zeros([BC, BK], dtype=tl.float32)
    for i_c in range(0, BC):
        c32 = tl.cast(i_c, tl.int32)
        c64 = tl.cast(i_c, tl.int64)
        p_c = (t0 + c64) * K + o_k
        b_qc = tl.load(q + p_c, mask=m_k, other=0.0)
        b_kc = tl.load(k + p_c, mask=m_k, other=0.0)
        b_gc = tl.load(G + p_c, mask=m_k, other=0.0)
        b_uc = tl.load(u + (t0 + c64) * V + o_v, mask=m_v, other=0.0)
        b_doc = tl.load(do + (t0 + c64) * V + o_v, mask=m_v, other=0.0)
        m_self = (o_c == c32)[:, None]
        b_e_t = tl.exp(tl.where((o_c >= c32)[:, None], b_G - b_gc[None, :], float("-inf")))  # [t, k]
        b_dcol = scale * tl.sum(b_do * b_uc[None, :], axis=1)  # D_qk[t, c]
        b_term = b_dcol[:, None] * b_kc[None, :] * b_e_t
        b_xqk += tl.where(m_self, 0.0, b_term)
        b_xdiag += tl.where(m_self, b_term, 0.0)
        b_dcol_kk = tl.sum(tl.where((o_c == c32)[None, :], b_dkk_ii, 0.0), axis=1)  # D_kk[t, c], 0 for t <= c
        b_xkk += b_dcol_kk[:, None] * b_kc[None, :] * b_e_t
        b_e_s = tl.exp(tl.where((o_c <= c32)[:, None], b_gc[None, :] - b_G, float("-inf")))  # [s, k]
        b_drow = scale * tl.sum(b_u * b_doc[None, :], axis=1)  # D_qk[c, s]
        b_term = b_drow[:, None] * b_qc[None, :] * b_e_s
        b_y += tl.where(m_self, 0.0, b_term)
        b_ydiag += tl.where(m_self, b_term, 0.0)
        b_drow_kk = tl.sum(tl.where(m_self, b_dkk_ii, 0.0), axis=0)  # D_kk[c, s], 0 for s >= c
        b_y += b_drow_kk[:, None] * b_kc[None, :] * b_e_s
    b_dq = tl.load(dq + p_k, mask=m_k[None, :], other=0.0) + b_xqk + b_xdiag
    b_dk = tl.load(dk + p_k, mask=m_k[None, :], other=0.0) + b_y + b_ydiag + b_xkk
    b_dg = tl.load(dg + p_k, mask=m_k[None, :], other=0.0) + b_q * b_xqk + b_k * (b_xkk - b_y)
    tl.store(dq + p_k, b_dq, mask=m_k[None, :])
    tl.store(dk + p_k, b_dk, mask=m_k[None, :])
    tl.store(dg + p_k, b_dg, mask=m_k[None, :])


def _launch(BK: int, BV: int) -> tuple[dict, dict]:
    """Launch options of the chunk-parallel kernels and of the two scan kernels. The scans pipeline at
    most two chunks (num_stages: one for K, V > 64), so that their shared memory fits (compiled for
    sm_90 by tools/triton_compile_check.py with 32 value columns per scan program: 40 KB and 72 KB
    at K = V = 128, 72 KB and 104 KB at 64); wider heads get 8 warps for the register tiles."""
    wide = max(BK, BV) > 64
    num_warps = 8 if wide else 4
    return {"num_warps": num_warps}, {"num_warps": num_warps, "num_stages": 1 if wide else 2}


def _pack(x: torch.Tensor, TP: int) -> torch.Tensor:
    """[B, T, H, *D] -> fp32 [B * H, TP, *D], zero padded along T, contiguous."""
    B, T, H = x.shape[:3]
    x = x.float()
    pad = [0, 0] * (x.dim() - 3) + [0, 0, 0, TP - T]
    return torch.nn.functional.pad(x, pad).transpose(1, 2).reshape(B * H, TP, *x.shape[3:]).contiguous()


def _unpack(x: torch.Tensor, B: int, T: int, H: int) -> torch.Tensor:
    """Inverse of :func:`_pack`: [B * H, TP, *D] -> [B, T, H, *D]."""
    return x.view(B, H, *x.shape[1:])[:, :, :T].transpose(1, 2)


class TritonGatedDeltaFunction(torch.autograd.Function):
    """Forward and backward of the chunked gated delta rule by the Triton kernels (inputs checked)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, initial_state, scale, output_final_state, chunk_size):
        B, T, H, K = q.shape
        V = v.shape[-1]
        BT, BC = chunk_size, SUB_CHUNK
        N = triton.cdiv(T, BT)
        TP, BH, NS = N * BT, B * H, BT // BC
        BK, BV = max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))
        dev, f32 = q.device, torch.float32
        qp, kp, vp, bp = _pack(q, TP), _pack(k, TP), _pack(v, TP), _pack(beta, TP)
        gp = _pack(g.unsqueeze(-1).expand(q.shape) if g.dim() == 3 else g, TP)
        G = gp.view(BH, N, BT, K).cumsum(2).view(BH, TP, K)
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        a_qk = torch.empty(BH, N, BT, BT, dtype=f32, device=dev)
        a_kk, minv = torch.empty_like(a_qk), torch.empty_like(a_qk)
        w_k = torch.empty(BH, TP, K, dtype=f32, device=dev)
        w_v, u, o = (torch.empty(BH, TP, V, dtype=f32, device=dev) for _ in range(3))
        hs = torch.empty(BH, N, K, V, dtype=f32, device=dev)
        ht = torch.empty(B, H, K, V, dtype=f32, device=dev) if output_final_state else None
        par, scan = _launch(BK, BV)
        common = dict(K=K, BT=BT, BK=BK, PRECISION=_precision())
        _gd_fwd_scores_kernel[(N * NS, BH)](qp, kp, G, a_qk, a_kk, TP, N, BC=BC, NS=NS, **common, **par)
        _gd_fwd_solve_kernel[(N, BH)](kp, vp, bp, G, a_kk, minv, w_k, w_v, TP, N, V=V, BV=BV, **common, **par)
        BVS = min(BV, SCAN_VALUE_TILE)
        _gd_fwd_state_kernel[(triton.cdiv(V, BVS), BH)](kp, G, w_k, w_v, u, h0, hs, ht, TP, N, V=V, BV=BVS,
                                                        USE_H0=h0 is not None, STORE_FINAL=output_final_state,
                                                        **common, **scan)
        _gd_fwd_output_kernel[(N, BH)](qp, G, hs, a_qk, u, o, scale, TP, N, V=V, BV=BV, **common, **par)
        ctx.save_for_backward(qp, kp, vp, bp, G, hs, u, minv, a_qk, a_kk, w_k)
        ctx.scale, ctx.shape, ctx.chunk_size, ctx.use_h0 = scale, (B, T, H, K, V), BT, h0 is not None
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, g.dtype, beta.dtype)
        ctx.per_head = g.dim() == 3
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        return _unpack(o, B, T, H).to(q.dtype), ht

    @staticmethod
    def backward(ctx, do, dht):
        qp, kp, vp, bp, G, hs, u, minv, a_qk, a_kk, w_k = ctx.saved_tensors
        B, T, H, K, V = ctx.shape
        BT, BC = ctx.chunk_size, SUB_CHUNK
        BH, N, TP, NS = B * H, hs.shape[1], G.shape[1], BT // BC
        BK, BV = max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))
        par, scan = _launch(BK, BV)
        common = dict(K=K, V=V, BT=BT, BK=BK, BV=BV, PRECISION=_precision())
        dop = _pack(do, TP)
        dhs, du = torch.empty_like(hs), torch.empty_like(u)
        dh0 = torch.empty(B, H, K, V, dtype=torch.float32, device=qp.device) if ctx.use_h0 else None
        use_dht = dht is not None
        BVS = min(BV, SCAN_VALUE_TILE)
        _gd_bwd_state_kernel[(triton.cdiv(V, BVS), BH)](
            qp, kp, G, w_k, a_qk, dop, dht.float().contiguous() if use_dht else None, dhs, du, dh0, ctx.scale,
            TP, N, USE_DHT=use_dht, STORE_DH0=ctx.use_h0, **{**common, "BV": BVS}, **scan,
        )
        dq, dk, dG = (torch.empty_like(qp) for _ in range(3))
        dv, dbeta, d_kk = torch.empty_like(vp), torch.empty_like(bp), torch.empty_like(a_kk)
        _gd_bwd_chunk_kernel[(N, BH)](qp, kp, vp, bp, G, hs, dhs, u, du, minv, a_kk, dop, dq, dk, dv, dG, dbeta,
                                      d_kk, ctx.scale, T, TP, N, **common, **par)
        _gd_bwd_pairs_kernel[(N * NS, BH)](qp, kp, G, u, dop, d_kk, dq, dk, dG, ctx.scale, TP, N, BC=BC, NS=NS,
                                           **common, **par)
        # G_t = sum of g over the chunk up to t: dg_t = sum over u >= t in the chunk of dG_u.
        dg = dG.view(BH, N, BT, K).flip(2).cumsum(2).flip(2).view(BH, TP, K)
        dg = _unpack(dg, B, T, H)
        if ctx.per_head:
            dg = dg.sum(-1)
        grads = [_unpack(x, B, T, H) for x in (dq, dk, dv)] + [dg, _unpack(dbeta, B, T, H)]
        grads = [x.to(dt) for x, dt in zip(grads, ctx.dtypes, strict=True)]
        dh0 = dh0.to(ctx.h0_dtype) if dh0 is not None else None
        return (*grads, dh0, None, None, None)


def triton_gated_delta(
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
    """Chunked gated delta rule by the Triton kernels (CUDA, or the interpreter on the CPU).

    Args and result as :func:`layers.ops.gated_delta.chunk_gated_delta`; ``chunk_size`` a power of two
    in [16, 64], K and V at most 128. A per-head ``g [B, T, H]`` is broadcast to the key channels.

    Example:
        >>> q = k = torch.nn.functional.normalize(torch.randn(1, 100, 2, 32), dim=-1).cuda()  # doctest: +SKIP
        >>> v = torch.randn(1, 100, 2, 32).cuda(); beta = torch.rand(1, 100, 2).cuda()        # doctest: +SKIP
        >>> g = -torch.rand(1, 100, 2, 32).cuda() / 16                                        # doctest: +SKIP
        >>> o, s = triton_gated_delta(q, k, v, g, beta, output_final_state=True)              # doctest: +SKIP
    """
    check_gated_delta_inputs(q, k, v, g, beta, initial_state)
    check_triton_launch("gated_delta", __name__, q, v, chunk_size, MAX_HEAD_DIM, MAX_CHUNK)
    scale = resolve_scale(scale, q.shape[-1])
    B, T, H, K = q.shape
    V = v.shape[-1]
    if T == 0:
        state = initial_state.float() if initial_state is not None else q.new_zeros(B, H, K, V, dtype=torch.float32)
        return q.new_zeros(B, 0, H, V), (state if output_final_state else None)
    return TritonGatedDeltaFunction.apply(q, k, v, g, beta, initial_state, scale, output_final_state, chunk_size)
