"""Spatiotemporal rotary position embedding (RoPE) for frame tokens.

A head of width D is split into three groups of channel pairs: time (``dt`` channels), image row
(``dy``) and image column (``dx``), ``dt + dy + dx = D``. Each pair ``(x[2i], x[2i+1])`` of a group
is rotated by the angle ``pos * theta**(-2i / d_group)``. Rotations of disjoint groups commute, so
the spatial part and the temporal part are applied separately:

- the spatial rotation is applied to queries and keys once, when they are computed (positions are
  bounded by the patch grid);
- the temporal rotation is applied only to keys, by their frame's offset RELATIVE to the query's
  frame (``0`` for the current frame, ``-1`` for the previous one, ...), so a query at absolute
  frame 10,000 sees exactly the same phases as one at frame 5. This keeps the parallel path and
  the streaming step bit-compatible (no fp32 phase error at large absolute frame indices).

Because ``<R(a) q, R(b) k> = <q, R(b - a) k>``, rotating the key by the relative offset and leaving
the query unrotated gives the same scores as absolute rotations of both.
"""

from __future__ import annotations

import torch
from torch import nn


def rope_split(head_dim: int, time_fraction: float = 0.25) -> tuple[int, int, int]:
    """Channels (time, row, column) of a head; each a multiple of 2, summing to ``head_dim``.

    Args:
        head_dim: width of one attention head; must be even and >= 6.
        time_fraction: share of the head given to the temporal rotation (0 disables it).

    Returns:
        (dt, dy, dx).
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"rope: head_dim must be even and >= 6, got {head_dim}")
    pairs = head_dim // 2
    pt = int(round(pairs * time_fraction))
    rest = pairs - pt
    py = rest // 2
    px = rest - py
    return 2 * pt, 2 * py, 2 * px


def _inv_freq(dim: int, theta: float) -> torch.Tensor:
    """[dim / 2] inverse frequencies ``theta**(-2i/dim)`` in float64."""
    return theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / max(dim, 1))


def _rotate_pairs(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x [..., 2n]`` by ``angle [..., n]`` (broadcast)."""
    x2 = x.unflatten(-1, (-1, 2))
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x2[..., 0], x2[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class SpatioTemporalRoPE(nn.Module):
    """RoPE over (time, row, column) with the channel split of :func:`rope_split`.

    Args:
        head_dim: width of one head.
        theta_space: base of the spatial frequencies.
        theta_time: base of the temporal frequencies.
        time_fraction: share of the head rotated by time (0 gives a purely spatial 2D RoPE).

    Example:
        >>> rope = SpatioTemporalRoPE(64)
        >>> q = torch.randn(2, 4, 10, 64)                    # [B, heads, tokens, D]
        >>> pos = torch.zeros(10, 2)                         # (row, col) per token
        >>> rope.rotate_space(q, pos).shape
        torch.Size([2, 4, 10, 64])
    """

    def __init__(self, head_dim: int, theta_space: float = 100.0, theta_time: float = 100.0,
                 time_fraction: float = 0.25) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.dt, self.dy, self.dx = rope_split(head_dim, time_fraction)
        self.register_buffer("inv_freq_t", _inv_freq(self.dt, theta_time).float(), persistent=False)
        self.register_buffer("inv_freq_y", _inv_freq(self.dy, theta_space).float(), persistent=False)
        self.register_buffer("inv_freq_x", _inv_freq(self.dx, theta_space).float(), persistent=False)

    def rotate_space(self, x: torch.Tensor, pos_yx: torch.Tensor) -> torch.Tensor:
        """Rotate the row/column channels of ``x`` by token positions.

        Args:
            x: [..., N, D] queries or keys (any leading dims, e.g. [B, heads, N, D]).
            pos_yx: [N, 2] (row, column) positions of the N tokens (small integers).

        Returns:
            [..., N, D], time channels untouched.
        """
        xt, xy, xx = x.split((self.dt, self.dy, self.dx), dim=-1)
        ang_y = pos_yx[:, 0:1].float() * self.inv_freq_y      # [N, dy/2]
        ang_x = pos_yx[:, 1:2].float() * self.inv_freq_x
        return torch.cat((xt, _rotate_pairs(xy, ang_y), _rotate_pairs(xx, ang_x)), dim=-1)

    def rotate_time(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Rotate the time channels of ``x`` by a relative frame offset.

        Args:
            x: [..., D] keys.
            offset: relative frame offsets broadcastable to ``x.shape[:-1]`` (e.g. [W, 1] for keys
                [..., W, N, D]), small integers such as ``-(W-1) .. 0``.

        Returns:
            [..., D], spatial channels untouched.
        """
        if self.dt == 0:
            return x
        xt, rest = x.split((self.dt, self.dy + self.dx), dim=-1)
        ang = offset.float().unsqueeze(-1) * self.inv_freq_t
        return torch.cat((_rotate_pairs(xt, ang), rest), dim=-1)
