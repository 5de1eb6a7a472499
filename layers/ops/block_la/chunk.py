"""Block-causal linear attention with per-channel block decay: the parallel (chunked) torch form.

Same function as ``naive_block_la`` (see ``naive.py`` for the recursion), computed without a
T x T matrix and with every exponent <= 0 (derivation in README.md beside this file):

* Blocks are grouped into super-chunks of ``n`` blocks (about ``CHUNK_TOKENS`` tokens; ``n = 1``
  when a block alone is that long, e.g. 256 tokens per frame). ``G`` is the cumulative log-decay
  over the blocks of a super-chunk (block granularity) and ``A`` the decay a block reads at
  (``G`` exclusive for strict, inclusive otherwise).
* Inter-chunk: the state entering each super-chunk comes from a short scan over super-chunks,
  ``S_out = exp(G_last) S_in + (K * exp(G_last - G))^T V``; the chunk reads it with
  ``(Q * exp(A)) S_in``.
* Intra-chunk: the block-causal score matrix. Super-chunks are cut into tiles of ``s`` blocks
  (about ``TILE_TOKENS`` tokens). Between tiles the reference point is the read decay of the
  target tile's first block, so both factors ``exp(A - R)`` and ``exp(R - G)`` are <= 1; inside a
  tile the per-block-pair decay ``exp(A_j - G_m)`` is applied exactly, element-wise.
* With one block per super-chunk the intra part vanishes (strict) or is read from the state after
  the block (inclusive): pure per-block states by matmuls.

Gradients come from autograd. ``chunk_block_la(backend=None)`` runs the Triton kernels on CUDA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layers.ops.block_la.naive import (
    MAX_KERNEL_HEAD_DIM,
    check_block_la_inputs,
    compute_dtype_for,
    num_blocks,
)

CHUNK_TOKENS = 64
"""Target number of tokens per super-chunk (a multiple of the tile)."""
TILE_TOKENS = 16
"""Target number of tokens per tile inside a super-chunk (exact element-wise decay inside)."""

_BACKENDS = ("torch", "triton")


def chunk_block_la(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    block_size: int = 64,
    scale: float = 1.0,
    inclusive: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block-causal linear attention, parallel form (same arguments and result as ``naive_block_la``).

    Args:
        q: queries [B, T, H, K].
        k: keys [B, T, H, K].
        v: values [B, T, H, V].
        g: per-block log-decay [B, NB, H, K], NB = ceil(T / block_size), all <= 0; None = no decay.
        block_size: tokens per block (the last block may be shorter), >= 1.
        scale: factor on the output.
        inclusive: False: block c reads the state after blocks < c; True: after blocks <= c.
        initial_state: [B, H, K, V] state before the first block, or None (zeros).
        output_final_state: also return the state after the last block.
        backend: None (Triton for CUDA tensors in float32/16/bf16 with K <= 256, torch otherwise),
            "torch" or "triton" (CUDA, or the Triton interpreter when ``TRITON_INTERPRET=1`` was set
            before import).

    Returns:
        ``(o [B, T, H, V] in q.dtype, final_state [B, H, K, V] float32 (float64 for float64 inputs)
        or None)``.

    Example:
        >>> q = k = torch.randn(2, 512, 4, 64); v = torch.randn(2, 512, 4, 64)
        >>> g = -torch.rand(2, 2, 4, 64)                     # 2 frames of 256 tokens
        >>> o, s = chunk_block_la(q, k, v, g, block_size=256, output_final_state=True)
        >>> o.shape, s.dtype
        (torch.Size([2, 512, 4, 64]), torch.float32)
    """
    check_block_la_inputs(q, k, v, g, block_size, initial_state)
    if backend is None:  # the kernels compute in float32 and hold K <= 256 in registers
        on_kernels = q.is_cuda and q.dtype != torch.float64 and q.shape[-1] <= MAX_KERNEL_HEAD_DIM
        backend = "triton" if on_kernels else "torch"
    if backend not in _BACKENDS:
        raise ValueError(f"block_la: backend must be None or one of {_BACKENDS}, got {backend!r}")
    if backend == "triton":
        from layers.ops.block_la.triton import triton_block_la

        return triton_block_la(q, k, v, g, block_size, scale, inclusive, initial_state, output_final_state)
    return torch_block_la(q, k, v, g, block_size, scale, inclusive, initial_state, output_final_state)


def super_chunk_layout(block_size: int, num_blocks_total: int) -> tuple[int, int]:
    """Blocks per tile ``s`` and blocks per super-chunk ``n`` (a multiple of ``s``) for a block size."""
    s = max(1, TILE_TOKENS // block_size)
    n = s * max(1, CHUNK_TOKENS // (s * block_size))
    n = min(n, s * max(1, math.ceil(num_blocks_total / s)))  # no super-chunk larger than the sequence
    return s, n


def torch_block_la(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    block_size: int,
    scale: float,
    inclusive: bool,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch parallel form (inputs already checked); see the module docstring."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    L = block_size
    cdt = compute_dtype_for(q.dtype)
    if T == 0:
        state = q.new_zeros(B, H, K, V, dtype=cdt) if initial_state is None else initial_state.to(cdt)
        return q.new_zeros(B, 0, H, V), (state if output_final_state else None)
    nb = num_blocks(T, L)
    s, n = super_chunk_layout(L, nb)
    nc = math.ceil(nb / n)
    nbp, tp, N = nc * n, nc * n * L, n * L

    def to_blocks(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, H, NC, n, L, D]
        x = F.pad(x.to(cdt), (0, 0, 0, 0, 0, tp - T))
        return x.view(B, nc, n, L, H, x.shape[-1]).permute(0, 4, 1, 2, 3, 5)

    qb, kb, vb = to_blocks(q), to_blocks(k), to_blocks(v)
    if g is None:
        gb = q.new_zeros(B, H, nc, n, K, dtype=cdt)
    else:
        gb = F.pad(g.to(cdt), (0, 0, 0, 0, 0, nbp - nb)).view(B, nc, n, H, K).permute(0, 3, 1, 2, 4)
    g_inc = gb.cumsum(dim=3)  # [B, H, NC, n, K] decay from the chunk start through block j
    g_exc = F.pad(g_inc[:, :, :, :-1], (0, 0, 1, 0))  # through block j - 1 (exact exclusive cumsum)
    g_read = g_inc if inclusive else g_exc
    g_last = g_inc[:, :, :, -1]  # [B, H, NC, K]

    # State contribution of each super-chunk, then the scan over super-chunks.
    if n == 1:  # the only block is the last one: no decay between its write and the chunk end
        k_to_end = kb
    else:
        k_to_end = kb * torch.exp(g_last[:, :, :, None, None, :] - g_inc[:, :, :, :, None, :])
    d_state = k_to_end.reshape(B, H, nc, N, K).transpose(-1, -2) @ vb.reshape(B, H, nc, N, V)
    decay_last = torch.exp(g_last).unsqueeze(-1)  # [B, H, NC, K, 1]
    state = q.new_zeros(B, H, K, V, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    states_in = []
    for c in range(nc):
        states_in.append(state)
        state = decay_last[:, :, c] * state + d_state[:, :, c]
    s_in = torch.stack(states_in, dim=2)  # [B, H, NC, K, V]

    if n == 1:  # one block per super-chunk: read the state before (strict) or after (inclusive) it
        s_read = torch.cat([s_in[:, :, 1:], state.unsqueeze(2)], dim=2) if inclusive else s_in
        o = qb.reshape(B, H, nc, N, K) @ s_read
    else:
        q_read = qb * torch.exp(g_read).unsqueeze(-2)
        o = q_read.reshape(B, H, nc, N, K) @ s_in
        o = o + _intra_chunk(qb, kb, vb, g_inc, g_read, s, inclusive).reshape(B, H, nc, N, V)
    o = (scale * o).reshape(B, H, tp, V).transpose(1, 2)[:, :T]
    return o.to(q.dtype), (state if output_final_state else None)


def _intra_chunk(
    qb: torch.Tensor,
    kb: torch.Tensor,
    vb: torch.Tensor,
    g_inc: torch.Tensor,
    g_read: torch.Tensor,
    s: int,
    inclusive: bool,
) -> torch.Tensor:
    """Block-causal attention inside each super-chunk: [B, H, NC, n, L, D] inputs -> [B, H, NC, nt, s*L, V].

    ``g_inc``, ``g_read``: [B, H, NC, n, K] cumulative log-decay (through block m; read point of
    block j). Pair (j, m) is weighted per channel by ``exp(g_read[j] - g_inc[m])`` when m < j
    (strict) or m <= j (inclusive).
    """
    B, H, nc, n, L, K = qb.shape
    V = vb.shape[-1]
    nt, lt, N = n // s, s * L, n * L
    dev = qb.device
    q_t = qb.reshape(B, H, nc, nt, s, L, K)
    k_t = kb.reshape(B, H, nc, nt, s, L, K)
    v_t = vb.reshape(B, H, nc, nt, s, L, V)
    a_t = g_read.reshape(B, H, nc, nt, s, K)
    gi_t = g_inc.reshape(B, H, nc, nt, s, K)
    neg_inf = torch.tensor(float("-inf"), dtype=qb.dtype, device=dev)

    # Inside a tile: exact per-block-pair decay.
    if s == 1:
        if inclusive:  # the block sees itself, with no decay between read and write
            o = (q_t[:, :, :, :, 0] @ k_t[:, :, :, :, 0].transpose(-1, -2)) @ v_t[:, :, :, :, 0]
        else:
            o = qb.new_zeros(B, H, nc, nt, lt, V)
    else:
        j_idx = torch.arange(s, device=dev)
        pair_ok = (j_idx[None, :] <= j_idx[:, None]) if inclusive else (j_idx[None, :] < j_idx[:, None])
        expo = a_t[..., :, None, :] - gi_t[..., None, :, :]  # [B, H, NC, nt, s(j), s(m), K]
        w = torch.exp(torch.where(pair_ok[:, :, None], expo, neg_inf))
        qw = q_t[..., :, None, :, :] * w[..., None, :]  # [B, H, NC, nt, s(j), s(m), L, K]
        score = qw @ k_t[..., None, :, :, :].transpose(-1, -2)  # [..., s(j), s(m), L(l), L(p)]
        score = score.permute(0, 1, 2, 3, 4, 6, 5, 7).reshape(B, H, nc, nt, lt, lt)
        o = score @ v_t.reshape(B, H, nc, nt, lt, V)

    # Between tiles of one super-chunk: reference point = read decay of the target tile's first block.
    if nt > 1:
        ref = a_t[:, :, :, :, 0]  # [B, H, NC, nt, K]
        q_ref = (q_t * torch.exp(a_t - ref.unsqueeze(-2)).unsqueeze(-2)).reshape(B, H, nc, nt, lt, K)
        tile_of_block = torch.arange(n, device=dev) // s
        earlier = tile_of_block[None, :] < torch.arange(nt, device=dev)[:, None]  # [nt(J), n(m)]
        expo = ref.unsqueeze(-2) - g_inc.unsqueeze(3)  # [B, H, NC, nt, n, K]
        w = torch.exp(torch.where(earlier[:, :, None], expo, neg_inf))
        k_ref = (kb.unsqueeze(3) * w.unsqueeze(-2)).reshape(B, H, nc, nt, N, K)
        score = q_ref @ k_ref.transpose(-1, -2)  # [B, H, NC, nt, lt, N]
        o = o + score @ vb.reshape(B, H, nc, 1, N, V)
    return o
