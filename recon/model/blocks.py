"""Pre-norm residual blocks of the aggregator: frame block, local spatiotemporal block, memory block.

Every block maps tokens ``[B, T, N, C]`` of T consecutive frames to the same shape; the local and
memory blocks also take and return their streaming cache, so one block serves the parallel clip
path (T frames) and the streaming step (T = 1) alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from layers.rope import SpatioTemporalRoPE
from recon.model.attention import FrameAttention, LocalSpatioTemporalAttention
from recon.model.state import KVWindow


class Mlp(nn.Module):
    """Two-layer GELU MLP, hidden width ``ratio * dim``."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FrameBlock(nn.Module):
    """x + FrameAttention(norm(x)), then x + MLP(norm(x)); each frame on its own."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope: SpatioTemporalRoPE) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), FrameAttention(dim, num_heads, rope)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, pos_yx: torch.Tensor) -> torch.Tensor:
        """x: [B, T, N, C] -> [B, T, N, C]."""
        B, T, N, C = x.shape
        x = x + self.attn(self.norm1(x).view(B * T, N, C), pos_yx).view(B, T, N, C)
        return x + self.mlp(self.norm2(x))


class LocalBlock(nn.Module):
    """x + LocalSpatioTemporalAttention(norm(x)) over the last W frames, then x + MLP(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int,
                 rope: SpatioTemporalRoPE) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LocalSpatioTemporalAttention(dim, num_heads, window, rope)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, pos_yx: torch.Tensor, cache: KVWindow,
                frame_index: int) -> tuple[torch.Tensor, KVWindow]:
        """x: [B, T, N, C] frames ``frame_index .. frame_index + T - 1`` -> (same shape, new window)."""
        y, cache = self.attn(self.norm1(x), pos_yx, cache, frame_index)
        x = x + y
        return x + self.mlp(self.norm2(x)), cache


class MemoryBlock(nn.Module):
    """A full memory block: ``x + ls1 * memory(norm(x))``, then ``x + ls2 * MLP(norm(x))``.

    ``memory`` is a long-range memory layer (layers/memory.py protocol) that sees every token of
    every frame ([B, T, N, C]); its state is float32 regardless of autocast (the layers keep it so).
    ``ls1, ls2`` are per-channel LayerScale vectors starting at ``layer_scale`` (HorizonStream uses
    0.01), so a new block starts close to the identity and the pretrained path is undisturbed.

    Args:
        dim: token width C.
        layer: the memory mixer.
        mlp_ratio: MLP hidden width / dim.
        layer_scale: initial LayerScale value.
    """

    def __init__(self, dim: int, layer: nn.Module, mlp_ratio: float, layer_scale: float) -> None:
        super().__init__()
        self.norm, self.layer = nn.LayerNorm(dim), layer
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)
        self.ls1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        self.ls2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        return self.layer.init_cache(batch_size, device)

    def forward(self, x: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        y, cache = self.layer(self.norm(x), cache)
        x = x + self.ls1.to(x.dtype) * y.to(x.dtype)
        return x + self.ls2.to(x.dtype) * self.mlp(self.norm2(x)), cache
