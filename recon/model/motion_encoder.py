"""The pair motion encoder: pyramidal Lucas-Kanade flow of each (frame t, frame t - j) pair, then a
small CNN.

Camera motion between the frames of a window is small (at 128x96, about half a pixel per frame),
which the transformer's 16-pixel patch tokens resolve poorly. A CNN on the stacked frames
(FlowNet-S, SfMLearner's pose net) can measure it, but on a few hundred training scenes it learns
the scenes, not the motion: its held-out window-pose error was no better than predicting no motion.
So the motion is measured by a parameter-free layer that holds in any scene, and only its mapping
to pose is learned:

1. ``motion_frames``: grey level of the ImageNet-normalised frame (mean of the 3 channels),
   average-pooled to about ``MOTION_HEIGHT`` rows (``motion_pool``), the same for every preset, so
   the flow is measured at a fixed scale. These frames of the last S frames live in the stream
   state (fixed size), so the clip path and the streaming step compute the same pairs.
2. :func:`lucas_kanade`: coarse to fine over the levels ``LEVELS`` (pooling factors of the motion
   frame), the earlier frame is warped by the flow so far and one Lucas-Kanade step per cell of a
   ``CELL``-pixel grid solves the 2 x 2 normal equations of brightness constancy
   (``sum g g^T d = -sum g (I_earlier(x + flow) - I_current(x))``, ``g`` the central-difference
   gradient of the mean of the two images, a Tikhonov term of 1e-3 times the mean gradient energy).
   Output per cell: the flow ``d`` (current pixel x sits at x + d in the earlier frame; motion
   pixels / CELL) and, per level, ``log(smallest eigenvalue + 1e-4) / 10`` of the normal matrix
   (texture strength: where the flow can be trusted).
3. Two 3x3 convolutions (GELU; the second with stride 2), an average pool to a ``FEATURE_GRID``
   map and a linear map give the feature the camera trunk adds to slot j's pose tokens.

No gradient flows through step 2 (it has no parameters and its inputs are the frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MOTION_HEIGHT = 96
CELL = 8
LEVELS = (8, 4, 2, 1)
FEATURE_GRID = (6, 8)
_STEP_LIMIT = 1.5   # largest Lucas-Kanade update per level, in that level's pixels
_RIDGE = 1e-3
ITERS = 1           # Lucas-Kanade steps per level
_MIN_WINDOW = 4     # the normal equations sum at least (_MIN_WINDOW + 1)^2 pixels of a level


def motion_pool(image_size: tuple[int, int]) -> int:
    """Average-pooling factor from the model's frames (H, W) to the motion frames."""
    return max(1, image_size[0] // MOTION_HEIGHT)


def motion_frame_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the motion frames of a model with frames ``image_size`` (H, W)."""
    p = motion_pool(image_size)
    return image_size[0] // p, image_size[1] // p


def motion_frames(images: torch.Tensor, pool: int) -> torch.Tensor:
    """ImageNet-normalised frames [M, 3, H, W] -> grey motion frames [M, 1, H / pool, W / pool]."""
    grey = images.mean(1, keepdim=True)
    return F.avg_pool2d(grey, pool) if pool > 1 else grey


def _gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (replicated border) of [M, 1, h, w] -> (d/dx, d/dy)."""
    p = F.pad(image, (1, 1, 1, 1), mode="replicate")
    return 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]), 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])


def _warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample image [M, 1, h, w] at x + flow (flow [M, 2, h, w] in pixels, x then y), bilinear."""
    M, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=image.dtype, device=image.device),
                            torch.arange(w, dtype=image.dtype, device=image.device), indexing="ij")
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(image, torch.stack((gx, gy), -1), mode="bilinear", padding_mode="border",
                         align_corners=True)


def lucas_kanade(current: torch.Tensor, earlier: torch.Tensor, grid: tuple[int, int]
                 ) -> torch.Tensor:
    """Per-cell pyramidal Lucas-Kanade flow from ``current`` to ``earlier``.

    Args:
        current, earlier: [M, 1, h, w] motion frames.
        grid: (gh, gw) cells.

    Returns:
        [M, 2 + len(LEVELS), gh, gw]: flow x, y (motion pixels / CELL; ``current(x)`` matches
        ``earlier(x + flow)``), then per level (coarse to fine) the log texture strength / 10.
    """
    M = current.shape[0]
    flow = current.new_zeros(M, 2, *grid)                              # motion pixels
    strengths = []
    for level in LEVELS:
        cur = F.avg_pool2d(current, level) if level > 1 else current
        ear = F.avg_pool2d(earlier, level) if level > 1 else earlier
        size = cur.shape[-2:]
        for _ in range(ITERS):
            warped = _warp(ear, F.interpolate(flow, size=size, mode="bilinear", align_corners=False) / level)
            gx, gy = _gradients(0.5 * (cur + warped))
            gt = warped - cur
            products = torch.cat((gx * gx, gx * gy, gy * gy, gx * gt, gy * gt), 1)
            if CELL // level < _MIN_WINDOW:  # cells of fewer level pixels: widen to a sliding window
                products = F.avg_pool2d(products, _MIN_WINDOW + 1, stride=1, padding=_MIN_WINDOW // 2,
                                        count_include_pad=False)
            sums = F.adaptive_avg_pool2d(products, grid)
            sxx, sxy, syy, sxt, syt = sums.unbind(1)
            ridge = _RIDGE * (sxx + syy).mean((1, 2), keepdim=True) + 1e-8
            a, c = sxx + ridge, syy + ridge
            det = a * c - sxy * sxy
            step = torch.stack(((sxy * syt - c * sxt) / det, (sxy * sxt - a * syt) / det), 1)
            flow = flow + step.clamp(-_STEP_LIMIT, _STEP_LIMIT) * level
        if level > 1:  # a coarse level's estimate is noisy per cell: smooth it before refining
            flow = F.avg_pool2d(F.pad(flow, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        half_trace = 0.5 * (sxx + syy)
        smallest = half_trace - torch.sqrt((0.25 * (sxx - syy) ** 2 + sxy * sxy).clamp_min(1e-12))
        strengths.append(torch.log(smallest.clamp_min(0.0) + 1e-4) / 10.0)
    return torch.cat((flow / CELL, torch.stack(strengths, 1)), 1)


class PairMotionEncoder(nn.Module):
    """(current, earlier) motion frame pairs -> one feature vector per pair.

    Args:
        image_size: (H, W) of the model's frames.
        width: channels of the two convolutions over the flow map.
        out_dim: output feature width.
    """

    def __init__(self, image_size: tuple[int, int], width: int, out_dim: int) -> None:
        super().__init__()
        h, w = motion_frame_size(image_size)
        self.grid = (max(h // CELL, 1), max(w // CELL, 1))
        channels = 2 + len(LEVELS)
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.out = nn.Linear(width * FEATURE_GRID[0] * FEATURE_GRID[1], out_dim)

    def flow(self, current: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """current, earlier: [M, 1, h, w] motion frames -> the Lucas-Kanade output
        [M, 2 + len(LEVELS), gh, gw] (no gradient; see :func:`lucas_kanade`)."""
        with torch.no_grad():
            return lucas_kanade(current.float(), earlier.float(), self.grid)

    def features(self, flow: torch.Tensor) -> torch.Tensor:
        """A :meth:`flow` output [M, 2 + len(LEVELS), gh, gw] -> features [M, out_dim]."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(flow))))
        return self.out(F.adaptive_avg_pool2d(x, FEATURE_GRID).flatten(1))

    def forward(self, current: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """current, earlier: [M, 1, h, w] motion frames -> [M, out_dim]."""
        return self.features(self.flow(current, earlier))
