"""Fit a frame to the model's input resolution, with the intrinsics adjusted exactly.

Two policies:
- ``crop`` (default): scale so the frame covers the model size (aspect kept), then centre-crop.
- ``resize``: scale width and height independently to the model size (aspect may change).
K follows ``recon.geometry.resize_intrinsics`` / ``crop_intrinsics`` (pixel centres at integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from recon.errors import InputError
from recon.geometry import crop_intrinsics, resize_intrinsics

POLICIES = ("crop", "resize")


@dataclass(frozen=True)
class FitPlan:
    """How one source resolution maps to the model resolution.

    Attributes:
        src_hw: source (height, width).
        out_hw: model (height, width).
        scaled_hw: size after resizing, before cropping.
        sx, sy: resize factors (new / old).
        x0, y0: top-left of the crop in the resized image.
    """

    src_hw: tuple[int, int]
    out_hw: tuple[int, int]
    scaled_hw: tuple[int, int]
    sx: float
    sy: float
    x0: int
    y0: int

    def image(self, image: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 source -> [h, w, 3] uint8 at model resolution."""
        if image.shape[:2] != self.src_hw:
            raise InputError(
                f"frame is {image.shape[1]}x{image.shape[0]}, expected {self.src_hw[1]}x{self.src_hw[0]} "
                "like the first frame"
            )
        sh, sw = self.scaled_hw
        shrink = sw < self.src_hw[1] or sh < self.src_hw[0]
        out = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        h, w = self.out_hw
        return np.ascontiguousarray(out[self.y0 : self.y0 + h, self.x0 : self.x0 + w])

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """[H, W] ground-truth depth -> [h, w] by nearest neighbour (never mixes across edges)."""
        sh, sw = self.scaled_hw
        out = cv2.resize(depth.astype(np.float32), (sw, sh), interpolation=cv2.INTER_NEAREST)
        h, w = self.out_hw
        return np.ascontiguousarray(out[self.y0 : self.y0 + h, self.x0 : self.x0 + w])

    def intrinsics(self, K: np.ndarray) -> np.ndarray:
        """[3, 3] source intrinsics (pixels) -> [3, 3] at model resolution."""
        Kt = torch.as_tensor(np.asarray(K, dtype=np.float64))
        Kt = crop_intrinsics(resize_intrinsics(Kt, self.sx, self.sy), self.x0, self.y0)
        return Kt.numpy()


def plan_fit(src_hw: tuple[int, int], out_hw: tuple[int, int], policy: str = "crop") -> FitPlan:
    """Plan the resize (and crop) from ``src_hw`` to ``out_hw`` under ``policy``."""
    if policy not in POLICIES:
        raise InputError(f"resolution policy must be one of {POLICIES}, got {policy!r}")
    (H, W), (h, w) = src_hw, out_hw
    if min(H, W, h, w) < 1:
        raise InputError(f"cannot fit a {W}x{H} frame to {w}x{h}")
    if policy == "resize":
        return FitPlan((H, W), (h, w), (h, w), w / W, h / H, 0, 0)
    s = max(h / H, w / W)
    sh, sw = max(h, round(H * s)), max(w, round(W * s))
    return FitPlan((H, W), (h, w), (sh, sw), sw / W, sh / H, (sw - w) // 2, (sh - h) // 2)
