"""Block-causal linear attention with per-channel decay at block boundaries: reference loop.

Tokens are grouped into consecutive blocks of ``block_size`` (the last block may be shorter). One
state ``S: [K, V]`` per (batch, head) is updated once per block:

    S_c = diag(exp g_c) S_{c-1} + sum_{i in block c} k_i v_i^T          S_{-1} = initial_state or 0
    strict:    o_i = scale * q_i^T S_{c-1}      (block c reads the state before its own tokens)
    inclusive: o_i = scale * q_i^T S_c          (block c reads the state after its own tokens)

Equivalently ``O = ((Q D Kᵀ) * M) V`` with a block-causal mask ``M`` (``chunk(j) < chunk(i)`` strict,
``<=`` inclusive) and per-channel decay ``D`` = the product of the block decays in between: the
linear-attention form of TTT with a frozen kernel and of elastic TTT (``layers/ops/ttt``,
``layers/ops/elastic``).

This module also holds the input checks shared by every form (``check_block_la_inputs``).
"""

from __future__ import annotations

import math

import torch

MAX_KERNEL_HEAD_DIM = 256
"""Largest key dim the Triton kernels take (``chunk_block_la(backend=None)`` uses torch above it, and
for float64); here, beside the shared input checks, so chunk.py and triton.py both read it."""


def num_blocks(seq_len: int, block_size: int) -> int:
    """Number of blocks ``ceil(seq_len / block_size)`` covering a sequence."""
    return math.ceil(seq_len / block_size)


def compute_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_block_la_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    block_size: int,
    initial_state: torch.Tensor | None,
) -> None:
    """Validate the arguments of the block linear-attention ops.

    Raises:
        ValueError: a shape, dtype, device or value that breaks the contract, naming the argument
            and the expected versus actual value.
        TypeError: an argument that is not a tensor / int.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"block_la: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"block_la: {name} must be 4-D [B, T, H, D], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"block_la: {name} must be floating point, got {t.dtype}")
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_la: block_size must be an int, got {type(block_size).__name__}")
    if block_size < 1:
        raise ValueError(f"block_la: block_size must be >= 1, got {block_size}")
    if k.shape != q.shape:
        raise ValueError(
            f"block_la: k must have q's shape [B, T, H, K] = {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"block_la: v must be [B, T, H, V] with B, T, H = {tuple(q.shape[:3])} (from q),"
            f" got {tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"block_la: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"block_la: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    if g is not None:
        nb = num_blocks(T, block_size)
        if not isinstance(g, torch.Tensor) or not g.is_floating_point():
            raise ValueError(
                f"block_la: g must be a floating-point tensor [B, NB, H, K], got {type(g).__name__}"
            )
        if tuple(g.shape) != (B, nb, H, K):
            raise ValueError(
                f"block_la: g must be [B, NB, H, K] = {(B, nb, H, K)}"
                f" (NB = ceil(T={T} / block_size={block_size})), got {tuple(g.shape)}"
            )
        if g.device != q.device:
            raise ValueError(f"block_la: g must be on q's device {q.device}, got {g.device}")
        if g.numel() > 0 and bool((g > 0).any()):
            raise ValueError(
                f"block_la: g is a log-decay and must be <= 0 everywhere, got max {g.max().item():.4g}"
            )
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor) or not initial_state.is_floating_point():
            raise ValueError(
                "block_la: initial_state must be a floating-point tensor [B, H, K, V],"
                f" got {type(initial_state).__name__}"
            )
        if tuple(initial_state.shape) != (B, H, K, V):
            raise ValueError(
                f"block_la: initial_state must be [B, H, K, V] = {(B, H, K, V)},"
                f" got {tuple(initial_state.shape)}"
            )
        if initial_state.device != q.device:
            raise ValueError(
                f"block_la: initial_state must be on q's device {q.device}, got {initial_state.device}"
            )


def naive_block_la(
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
    """Block-causal linear attention by a plain loop over blocks (the ground truth).

    Args:
        q: queries [B, T, H, K].
        k: keys [B, T, H, K].
        v: values [B, T, H, V].
        g: per-block, per-key-channel log-decay [B, NB, H, K], NB = ceil(T / block_size), all <= 0;
            applied to the state at the start of each block (before its tokens are added). None: no
            decay.
        block_size: tokens per block (the last block may be shorter), >= 1.
        scale: factor on the output (``o = scale * q^T S``).
        inclusive: False (strict): block c reads the state after blocks < c; True: after blocks <= c.
        initial_state: state before the first block [B, H, K, V]; None means zeros.
        output_final_state: also return the state after the last block.

    Returns:
        ``(o, final_state)``: o [B, T, H, V] in q.dtype; final_state [B, H, K, V] (float32, float64
        for float64 inputs) or None. Accumulates in float32 (float64 for float64 inputs).

    Example:
        >>> q = k = torch.randn(1, 10, 2, 8); v = torch.randn(1, 10, 2, 4)
        >>> g = -torch.rand(1, 3, 2, 8)                      # ceil(10 / 4) = 3 blocks
        >>> o, s = naive_block_la(q, k, v, g, block_size=4, output_final_state=True)
        >>> o.shape, s.shape
        (torch.Size([1, 10, 2, 4]), torch.Size([1, 2, 8, 4]))
    """
    check_block_la_inputs(q, k, v, g, block_size, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    cdt = compute_dtype_for(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    if initial_state is None:
        state = q.new_zeros(B, H, K, V, dtype=cdt)
    else:
        state = initial_state.to(cdt)
    outputs = []
    for c in range(num_blocks(T, block_size)):
        lo, hi = c * block_size, min((c + 1) * block_size, T)
        q_c = qc[:, lo:hi].transpose(1, 2)  # [B, H, L, K]
        k_c = kc[:, lo:hi].transpose(1, 2)
        v_c = vc[:, lo:hi].transpose(1, 2)  # [B, H, L, V]
        if not inclusive:
            outputs.append(scale * (q_c @ state))
        if g is not None:
            state = torch.exp(g[:, c].to(cdt)).unsqueeze(-1) * state
        state = state + k_c.transpose(-1, -2) @ v_c
        if inclusive:
            outputs.append(scale * (q_c @ state))
    if outputs:
        o = torch.cat(outputs, dim=2).transpose(1, 2)  # [B, T, H, V]
    else:
        o = q.new_zeros(B, 0, H, V, dtype=cdt)
    return o.to(q.dtype), (state if output_final_state else None)
