"""Prediction heads: dense depth + confidence, the camera trunk (window-relative poses and field of
view) and the metric readout.

Every head works on each frame on its own (no state), so the clip path and the streaming step
share them unchanged; the stateful part of the readout (scale smoothing, motion averaging) is in
:mod:`recon.model.readout`.

Token layout per frame (see :mod:`recon.model.embed`): ``[pose tokens (P * G), metric, registers...,
patches]``, P pose slots: the S window slots, then any long slots.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recon.model.bounded import log_tail_clamp


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

    - depth in the model's unit scale = act(log_depth_map), ``act`` = exp (or softplus); the
      metric readout's scale multiplies it into metres (:class:`recon.model.StreamReconModel`);
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

    def forward(self, levels: list[torch.Tensor], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict depth and confidence.

        Args:
            levels: per level, tokens [M, N, C] (M frames).
            images: [M, 3, H, W] ImageNet-normalised images.

        Returns:
            (depth [M, H, W] > 0 in unit scale, confidence [M, H, W] >= 1).
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
        z = raw[:, 0]
        if self.depth_activation == "exp":
            depth = torch.exp(log_tail_clamp(z, -12.0, 12.0))   # bounded, never flat
        else:
            depth = F.softplus(z) + 1e-6
        conf = 1.0 + torch.exp(log_tail_clamp(raw[:, 1], hi=20.0))
        return depth, conf


class CameraTrunk(nn.Module):
    """A frame's pose tokens -> its poses relative to P earlier frames, and its field of view.

    The ``P * G`` pose tokens of a frame (slot-major, see :mod:`recon.model.embed`) go through
    ``depth`` pre-norm transformer blocks among themselves; the G tokens of slot k (frame offset
    ``d = offsets[k]``) are averaged, for the S window slots the pair-motion feature of
    (frame t, frame t - d) is added (a long slot has no pair flow), and an MLP reads the pose of
    the current frame ``t`` in the camera of frame ``t - d``
    (``inv(cam2world[t - d]) @ cam2world[t]``, OpenCV axes): a translation in the model's unit
    scale (the metric readout multiplies it) and a unit quaternion (w x y z, w >= 0) that starts
    near the identity. The mean of all pose tokens gives (fov_h, fov_w) in (0, pi) radians.

    Args:
        dim: token width C.
        slots: P, window and long slots together.
        tokens_per_slot: G.
        depth: transformer blocks.
        hidden: MLP hidden width (blocks and readouts).
        num_heads: attention heads of the blocks.
    """

    def __init__(self, dim: int, slots: int, tokens_per_slot: int, depth: int, hidden: int,
                 num_heads: int) -> None:
        super().__init__()
        self.slots, self.tokens_per_slot = slots, tokens_per_slot
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, num_heads, hidden, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pose = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 7))
        self.fov = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 2))
        for readout in (self.pose, self.fov):  # start near zero motion, identity rotation, ~60 degrees
            nn.init.normal_(readout[-1].weight, std=1e-3)
            nn.init.zeros_(readout[-1].bias)

    def forward(self, pose_tokens: torch.Tensor, motion: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Read the window poses.

        Args:
            pose_tokens: [M, P * G, C] (M frames).
            motion: [M, S, C] pair-motion features of (frame t, frame t - j) of the S <= P window
                slots, added to their pooled pose tokens before the pose MLP
                (:mod:`recon.model.motion_encoder`).

        Returns:
            (translation [M, P, 3] in unit scale, quaternion wxyz [M, P, 4] unit with w >= 0,
             fov [M, 2] (fov_h, fov_w) radians), float32.
        """
        x = pose_tokens
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        M = x.shape[0]
        per_slot = x.view(M, self.slots, self.tokens_per_slot, -1).mean(2)
        S = motion.shape[1]
        per_slot = torch.cat((per_slot[:, :S] + motion, per_slot[:, S:]), dim=1)
        raw = self.pose(per_slot).float()                                       # [M, P, 7]
        q = raw[..., 3:] + raw.new_tensor([1.0, 0.0, 0.0, 0.0])
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        q = torch.where(q[..., :1] < 0, -q, q)
        fov = math.pi * torch.sigmoid(self.fov(x.mean(1)).float() - 0.7)         # ~ 60 degrees at init
        return raw[..., :3], q, fov


class MetricReadout(nn.Module):
    """The metric readout token -> one log-scale per frame (``s = exp``, before streaming smoothing).

    Args:
        dim: token width C.
        hidden: MLP hidden width.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        """token: [M, C] -> log-scale [M] float32."""
        return self.mlp(token).float().squeeze(-1)
