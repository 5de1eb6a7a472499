"""Prediction heads: dense depth + confidence, and the camera (pose and field of view).

Both heads work on each frame on its own (no state), so the clip path and the streaming step
share them unchanged.

Token layout per frame (see :mod:`recon.model.embed`): ``[camera, scale, registers..., patches]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# pose_enc layout: translation (3, metres, camera-to-world of the first camera's frame),
# quaternion (4, w x y z order, cam2world rotation), fov_h, fov_w (radians).
POSE_ENC_DIM = 9


class _ResidualConv(nn.Module):
    """x + conv(gelu(conv(gelu(x)))) at constant resolution."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class DenseHead(nn.Module):
    """A light DPT-style head: multi-level patch tokens -> fused feature map -> upsampled to pixels.

    Each level's patch tokens are normed and projected to ``features`` channels on the patch grid;
    levels are fused from deepest to shallowest with residual conv units; ``floor(log2(patch))``
    stages of bilinear x2 upsampling + conv (and a last bilinear resize when the patch side is not a
    power of two) bring the map to full resolution, where a few convolutions of the
    (normalised) image add edge detail. Outputs:

    - depth = act(log_depth_map + log_scale) metres, ``act`` = exp (or softplus of the sum),
      ``log_scale`` one scalar per frame read from the scale token;
    - confidence = 1 + exp(c) (>= 1).

    Args:
        dim: token width C.
        features: feature channels.
        num_levels: number of token levels fed in.
        patch_size: patch side in pixels.
        num_special: special tokens before the patches.
        grid: (h, w) patch grid.
        depth_activation: ``exp`` or ``softplus``.
    """

    def __init__(self, dim: int, features: int, num_levels: int, patch_size: int, num_special: int,
                 grid: tuple[int, int], depth_activation: str = "exp") -> None:
        super().__init__()
        self.num_special, self.grid, self.depth_activation = num_special, grid, depth_activation
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_levels))
        self.projs = nn.ModuleList(nn.Linear(dim, features) for _ in range(num_levels))
        self.fuse = nn.ModuleList(_ResidualConv(features) for _ in range(num_levels))
        stages = int(math.floor(math.log2(patch_size)))
        chans = [max(features >> s, 16) for s in range(stages + 1)]
        self.up = nn.ModuleList(nn.Conv2d(chans[s], chans[s + 1], 3, padding=1) for s in range(stages))
        self.image_conv = nn.Sequential(nn.Conv2d(3, chans[-1], 3, padding=1), nn.GELU(),
                                        nn.Conv2d(chans[-1], chans[-1], 3, padding=1))
        self.out = nn.Sequential(nn.Conv2d(chans[-1], chans[-1], 3, padding=1), nn.GELU(),
                                 nn.Conv2d(chans[-1], 2, 1))
        self.scale = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def forward(self, levels: list[torch.Tensor], final: torch.Tensor, images: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict depth and confidence.

        Args:
            levels: per level, tokens [M, N, C] (M frames).
            final: final normalised tokens [M, N, C] (token 1 is the scale token).
            images: [M, 3, H, W] ImageNet-normalised images.

        Returns:
            (depth [M, H, W] > 0 metres, confidence [M, H, W] >= 1).
        """
        M = images.shape[0]
        h, w = self.grid
        feat = None
        for i in reversed(range(len(levels))):
            tok = self.projs[i](self.norms[i](levels[i][:, self.num_special:]))
            tok = tok.transpose(1, 2).reshape(M, -1, h, w)
            feat = self.fuse[i](tok if feat is None else feat + tok)
        for conv in self.up:
            feat = F.gelu(conv(F.interpolate(feat, scale_factor=2.0, mode="bilinear", align_corners=False)))
        if feat.shape[-2:] != images.shape[-2:]:  # patch size not a power of two
            feat = F.interpolate(feat, size=images.shape[-2:], mode="bilinear", align_corners=False)
        feat = feat + self.image_conv(images.to(feat.dtype))
        raw = self.out(feat).float()                                            # [M, 2, H, W]
        log_scale = self.scale(final[:, 1]).float().view(M, 1, 1)
        z = raw[:, 0] + log_scale
        depth = torch.exp(z.clamp(-12.0, 12.0)) if self.depth_activation == "exp" else F.softplus(z) + 1e-6
        conf = 1.0 + torch.exp(raw[:, 1].clamp(max=20.0))
        return depth, conf


class CameraHead(nn.Module):
    """Camera token -> pose_enc [translation 3, quat_wxyz 4, fov_h, fov_w].

    The pose is cam2world relative to the first frame (world = first camera, OpenCV axes). The
    quaternion is normalised with w >= 0; fields of view are in (0, pi) radians.

    Args:
        dim: token width C.
        hidden: MLP hidden width.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, POSE_ENC_DIM))

    def forward(self, camera_token: torch.Tensor) -> torch.Tensor:
        """camera_token: [M, C] -> pose_enc [M, 9] float32."""
        raw = self.mlp(camera_token).float()
        t = raw[:, :3]
        q = raw[:, 3:7] + raw.new_tensor([1.0, 0.0, 0.0, 0.0])  # starts near the identity
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        q = torch.where(q[:, :1] < 0, -q, q)
        fov = math.pi * torch.sigmoid(raw[:, 7:9] - 0.7)         # ~ 60 degrees at init
        return torch.cat((t, q, fov), dim=-1)
