"""The pair motion encoder: a small CNN on the current frame stacked with an earlier one.

For each window slot ``j`` the camera trunk also sees a feature of the image pair
(frame t, frame t - j): both ImageNet-normalised frames, average-pooled by 2, stacked on the
channels with their difference ``[I_t, I_{t-j}, I_t - I_{t-j}]`` (9 channels), then four stride-2
3x3 convolutions (GELU) and a linear map of the flattened result. Early fusion lets the first
layers measure pixel motion directly (FlowNet-S, SfMLearner's pose network), which the
transformer's tokens (16-pixel patches, about one pixel of motion per frame at 128x96) resolve
poorly. The pooled frames of the last S frames live in the stream state (fixed size), so the
clip path and the streaming step compute the same pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOL = 2


def pooled_frames(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised frames [M, 3, H, W] -> the encoder's input frames [M, 3, H / 2, W / 2]."""
    return F.avg_pool2d(images, POOL)


class PairMotionEncoder(nn.Module):
    """(current, earlier) pooled frame pairs -> one feature vector per pair.

    Args:
        image_size: (H, W) of the model's frames (multiples of 32).
        width: channels of the first convolution (doubling to 4x).
        out_dim: output feature width.
    """

    def __init__(self, image_size: tuple[int, int], width: int, out_dim: int) -> None:
        super().__init__()
        chans = [9, width, 2 * width, 4 * width, 4 * width]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1)
                                   for i in range(4))
        h, w = image_size[0] // POOL, image_size[1] // POOL
        for _ in range(4):
            h, w = (h + 1) // 2, (w + 1) // 2
        self.out = nn.Linear(chans[-1] * h * w, out_dim)

    def forward(self, current: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """current, earlier: [M, 3, h, w] pooled frames -> [M, out_dim]."""
        x = torch.cat((current, earlier, current - earlier), dim=1)
        for conv in self.convs:
            x = F.gelu(conv(x))
        return self.out(x.flatten(1))
