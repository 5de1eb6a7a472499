"""Softmax attention of the aggregator: frame attention and local spatiotemporal attention.

Both use torch's ``scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA, the
math kernel on CPU), QK-normalisation, and RoPE from :mod:`layers.rope`.

Local spatiotemporal attention: the tokens of frame ``t`` attend to all tokens of frames
``t - W + 1 .. t`` (a banded block-causal mask over frames). It is computed the same way for a
clip and for one streamed frame: the keys/values of the previous ``W - 1`` frames (a
:class:`recon.model.state.KVWindow`) are prepended to the clip's, every query frame gathers its own
window of ``W`` frames (``unfold``), keys are rotated in time by their offset relative to the query
frame (``-(W-1) .. 0``), and window slots before frame 0 are masked. The output of every head is
multiplied by a sigmoid gate computed from the query token (head-wise gating).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layers.rope import SpatioTemporalRoPE
from recon.model.state import KVWindow


class FrameAttention(nn.Module):
    """Self-attention among the tokens of one frame, 2D RoPE on (row, column).

    Args:
        dim: token width C.
        num_heads: heads; ``dim // num_heads`` is the head width.
        rope: the shared RoPE module (its time channels are left unrotated here).
    """

    def __init__(self, dim: int, num_heads: int, rope: SpatioTemporalRoPE) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos_yx: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] tokens of B frames; pos_yx: [N, 2] -> [B, N, C]."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.rope.rotate_space(self.q_norm(q), pos_yx)
        k = self.rope.rotate_space(self.k_norm(k), pos_yx)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class LocalSpatioTemporalAttention(nn.Module):
    """Attention of each frame over the last ``window`` frames (itself included), gated per head.

    Args:
        dim: token width C.
        num_heads: heads.
        window: W, number of frames a query frame sees (>= 1; 1 = the frame itself only).
        rope: the shared spatiotemporal RoPE module.
    """

    def __init__(self, dim: int, num_heads: int, window: int, rope: SpatioTemporalRoPE) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"local attention: window must be >= 1 frame, got {window}")
        self.num_heads, self.head_dim, self.window = num_heads, dim // num_heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.gate = nn.Linear(dim, num_heads)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def empty_window(self, batch_size: int, num_tokens: int, device, dtype=torch.float32) -> KVWindow:
        """The window before frame 0: zeros of shape [B, W-1, heads, N, head_dim] (masked out)."""
        shape = (batch_size, self.window - 1, self.num_heads, num_tokens, self.head_dim)
        return KVWindow(torch.zeros(shape, device=device, dtype=dtype),
                        torch.zeros(shape, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, pos_yx: torch.Tensor, cache: KVWindow,
                frame_index: int) -> tuple[torch.Tensor, KVWindow]:
        """Attend over frames, for a clip or a single frame.

        Args:
            x: [B, T, N, C] tokens of T consecutive frames.
            pos_yx: [N, 2] token (row, column) positions.
            cache: keys/values of the W - 1 frames before ``x`` (see KVWindow).
            frame_index: absolute index of the first frame of ``x`` (slots of frames < 0 masked).

        Returns:
            (y [B, T, N, C], the window after the last frame of ``x``).
        """
        B, T, N, C = x.shape
        W, h, d = self.window, self.num_heads, self.head_dim
        q, k, v = self.qkv(x).view(B, T, N, 3, h, d).permute(3, 0, 1, 4, 2, 5)  # [B, T, h, N, d]
        q = self.rope.rotate_space(self.q_norm(q), pos_yx)
        k = self.rope.rotate_space(self.k_norm(k), pos_yx)
        k_all = torch.cat((cache.k.to(k.dtype), k), dim=1)                      # [B, W-1+T, h, N, d]
        v_all = torch.cat((cache.v.to(v.dtype), v), dim=1)
        # Window of query frame t = frames t .. t+W-1 of k_all; unfold puts W last.
        k_win = k_all.unfold(1, W, 1).permute(0, 1, 5, 2, 3, 4)                # [B, T, W, h, N, d]
        v_win = v_all.unfold(1, W, 1).permute(0, 1, 5, 2, 3, 4)
        offset = torch.arange(W, device=x.device) - (W - 1)                     # -(W-1) .. 0
        k_win = self.rope.rotate_time(k_win, offset.view(W, 1, 1))
        k_win = k_win.transpose(2, 3).reshape(B * T, h, W * N, d)
        v_win = v_win.transpose(2, 3).reshape(B * T, h, W * N, d)
        mask = None
        if frame_index < W - 1:  # some window slots are before frame 0
            frame = frame_index + torch.arange(T, device=x.device).view(T, 1) + offset.view(1, W)
            mask = (frame >= 0).view(1, T, 1, W, 1).expand(B, T, 1, W, N).reshape(B * T, 1, 1, W * N)
        y = F.scaled_dot_product_attention(q.reshape(B * T, h, N, d), k_win, v_win, attn_mask=mask)
        y = y.view(B, T, h, N, d) * torch.sigmoid(self.gate(x)).permute(0, 1, 3, 2).unsqueeze(-1)
        y = self.proj(y.permute(0, 1, 3, 2, 4).reshape(B, T, N, C))
        keep = k_all.shape[1] - (W - 1)
        return y, KVWindow(k_all[:, keep:], v_all[:, keep:])
