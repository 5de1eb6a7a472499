"""Full causal softmax attention over all past frames: the growing-cache baseline.

This is the memory design of StreamVGGT-style streaming models: every token of frame ``t`` attends
to every token of frames ``0 .. t`` (block-causal over frames, all tokens of the own frame
included). The key/value cache grows by one frame per step, so memory and time per frame grow
linearly with the sequence length. It is kept only to compare against the fixed-size memory
layers (``gla``, ``elastic``, ``ttt``); it follows the protocol of :mod:`layers.memory`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CausalAttentionCache:
    """Keys and values of every token seen so far.

    Attributes:
        k: [B, heads, L, head_dim] float32 keys (L = frames seen x tokens per frame).
        v: [B, heads, L, head_dim] float32 values.
    """

    k: torch.Tensor
    v: torch.Tensor


class CausalAttentionMemory(nn.Module):
    """Block-causal softmax attention with a growing key/value cache.

    Args:
        dim: token width C.
        num_heads: heads; ``dim`` must be divisible by it.
        qk_norm: LayerNorm on queries and keys per head (keeps logits bounded over long runs).

    Example:
        >>> layer = CausalAttentionMemory(32, 2)
        >>> y, cache = layer(torch.randn(1, 3, 5, 32))     # 3 frames of 5 tokens
        >>> y.shape, cache.k.shape
        (torch.Size([1, 3, 5, 32]), torch.Size([1, 2, 15, 16]))
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CausalAttentionMemory: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> CausalAttentionCache:
        """Empty cache (L = 0)."""
        shape = (batch_size, self.num_heads, 0, self.head_dim)
        return CausalAttentionCache(torch.zeros(shape, device=device), torch.zeros(shape, device=device))

    def forward(self, x: torch.Tensor, cache: CausalAttentionCache | None = None
                ) -> tuple[torch.Tensor, CausalAttentionCache]:
        """x: [B, T, P, C] -> (y [B, T, P, C], cache with T * P more keys)."""
        if x.dim() != 4:
            raise ValueError(f"CausalAttentionMemory: expected x of shape [B, T, P, C], got {list(x.shape)}")
        B, T, P, C = x.shape
        if cache is None:
            cache = self.init_cache(B, x.device)
        h, d = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).view(B, T * P, 3, h, d).permute(2, 0, 3, 1, 4)    # [B, h, T*P, d]
        q, k = self.q_norm(q), self.k_norm(k)
        state_dtype = torch.promote_types(k.dtype, torch.float32)  # fp32 under autocast, fp64 kept
        k_all = torch.cat((cache.k, k.to(state_dtype)), dim=2)
        v_all = torch.cat((cache.v, v.to(state_dtype)), dim=2)
        L0 = cache.k.shape[2]
        mask = None
        if T > 1:  # token of frame t sees keys j < L0 + (t + 1) * P
            frame = torch.arange(T * P, device=x.device) // P
            mask = torch.arange(L0 + T * P, device=x.device).view(1, -1) < (L0 + (frame + 1) * P).view(-1, 1)
        y = F.scaled_dot_product_attention(q, k_all.to(q.dtype), v_all.to(q.dtype), attn_mask=mask)
        y = self.proj(y.transpose(1, 2).reshape(B, T, P, C))
        return y, CausalAttentionCache(k_all, v_all)
