"""Per-frame tokenisation: ImageNet normalisation, patch embedding, pose/metric/register tokens.

A frame becomes ``N = P * G + 1 + R + h*w`` tokens, in this order: ``P * G`` pose tokens (G per
pose slot, slot-major: tokens ``k * G .. (k + 1) * G - 1`` belong to slot k, the frame
``t - offsets[k]`` of :func:`recon.model.config.slot_offsets`: the window slots ``1 .. S``, then
any long slots), the metric readout token, R register tokens, then the ``h x w`` patch tokens in
row-major order (``h = H / patch``, ``w = W / patch``). Every special token is a learned vector,
the same for every frame. RoPE positions: special tokens sit at (0, 0); patch (i, j) at
(i + 1, j + 1).

Patch tokens also get a learned absolute position embedding (initialised to a 2D sine-cosine
code of (row, column)). RoPE alone puts positions into attention scores only; the values, and so
what attention returns, would carry no position, and a pose token could see *that* a patch matched
one in an earlier frame but not *where*: the displacement, which is the relative pose's signal.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# ImageNet statistics, RGB, for images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """2D sine-cosine position code [height * width, dim] (row-major): the first half of the channels
    encodes the row, the second the column, each as sin/cos pairs over log-spaced frequencies."""
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    freq = torch.exp(-math.log(100.0) * torch.arange(quarter) / quarter)              # 1 .. 1/100
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                torch.arange(width, dtype=torch.float32), indexing="ij")
    code = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angle = coord[:, None] * freq[None]
        code += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(code, dim=1)


class FrameEmbedding(nn.Module):
    """Images -> tokens.

    Args:
        dim: token width C.
        patch_size: square patch side p in pixels; H and W must be multiples of p.
        image_size: (H, W) of the input frames.
        num_register_tokens: R extra learned tokens per frame (attention sinks).
        num_pose_tokens: P * G pose tokens per frame (P pose slots).
        absolute_position: add the learned absolute position embedding to the patch tokens.
    """

    def __init__(self, dim: int, patch_size: int, image_size: tuple[int, int],
                 num_register_tokens: int, num_pose_tokens: int, absolute_position: bool = True) -> None:
        super().__init__()
        H, W = image_size
        self.patch_size, self.grid = patch_size, (H // patch_size, W // patch_size)
        self.num_pose = num_pose_tokens
        self.metric_index = num_pose_tokens                  # position of the metric readout token
        self.num_special = num_pose_tokens + 1 + num_register_tokens
        self.patch = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_position = nn.Parameter(sincos_2d(*self.grid, dim) * 0.2) if absolute_position else None
        self.pose_tokens = nn.Parameter(torch.randn(num_pose_tokens, dim) * 0.02)
        self.metric_token = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.register_tokens = nn.Parameter(torch.randn(num_register_tokens, dim) * 0.02)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        gy, gx = torch.meshgrid(torch.arange(self.grid[0]), torch.arange(self.grid[1]), indexing="ij")
        pos = torch.cat((torch.zeros(self.num_special, 2), torch.stack((gy, gx), -1).view(-1, 2) + 1.0))
        self.register_buffer("pos_yx", pos, persistent=False)

    @property
    def num_tokens(self) -> int:
        """Tokens per frame, N."""
        return self.num_special + self.grid[0] * self.grid[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tokenise frames.

        Args:
            images: [M, 3, H, W] RGB in [0, 1] (M = B * T frames).

        Returns:
            [M, N, C] tokens.
        """
        x = self.patch((images - self.mean) / self.std).flatten(2).transpose(1, 2)   # [M, h*w, C]
        if self.patch_position is not None:
            x = x + self.patch_position.to(x.dtype)
        M = x.shape[0]
        special = torch.cat((self.pose_tokens, self.metric_token, self.register_tokens)).to(x.dtype)
        return torch.cat((special.expand(M, -1, -1), x), dim=1)
