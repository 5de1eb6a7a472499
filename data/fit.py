"""The one frame fit: a crop box in source pixels, then a resize to the model resolution.

Training (a random box, ``data.augment.random_crop_box``), validation and inference (the centred
box, :func:`center_crop_box`; or the whole frame for the ``resize`` policy) all go through
:class:`FrameFit`, so the model sees frames fitted the same way at train and run time.

- Images: bilinear with antialiasing (``torch.nn.functional.interpolate``, PIL's triangle filter),
  on the crop only (no pixel outside the box contributes).
- Depth and masks: nearest-exact sampling, so no depth is invented across object boundaries.
- K: ``crop_intrinsics`` then ``resize_intrinsics`` (pixel centres at integers,
  docs/conventions.md): a source pixel (u, v) lands at
  ``((u - x0 + 0.5) W / w - 0.5, (v - y0 + 0.5) H / h - 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from recon.errors import InputError
from recon.geometry import crop_intrinsics, resize_intrinsics

FitPolicy = Literal["crop", "resize"]
POLICIES: tuple[str, ...] = get_args(FitPolicy)


def center_crop_box(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred box of the output's aspect ratio: (x0, y0, w, h) in source pixels."""
    H0, W0 = src_hw
    H, W = out_hw
    w = min(W0, max(1, round(H0 * W / H)))
    h = min(H0, max(1, round(W0 * H / W)))
    return (W0 - w) // 2, (H0 - h) // 2, w, h


@dataclass(frozen=True)
class FrameFit:
    """How frames of one source size map to the model size: crop ``box``, then resize.

    Attributes:
        src_hw: source (height, width).
        out_hw: model (height, width).
        box: (x0, y0, w, h) integer crop in source pixels, inside the frame.
    """

    src_hw: tuple[int, int]
    out_hw: tuple[int, int]
    box: tuple[int, int, int, int]

    @classmethod
    def plan(cls, src_hw: tuple[int, int], out_hw: tuple[int, int], policy: str = "crop") -> FrameFit:
        """The inference / validation fit under ``policy``: ``crop`` (the centred box of the model's
        aspect, square pixels kept) or ``resize`` (the whole frame, aspect may change)."""
        if policy not in POLICIES:
            raise InputError(f"resolution policy must be one of {POLICIES}, got {policy!r}")
        (H, W), (h, w) = src_hw, out_hw
        if min(H, W, h, w) < 1:
            raise InputError(f"cannot fit a {W}x{H} frame to {w}x{h}")
        box = (0, 0, W, H) if policy == "resize" else center_crop_box((H, W), (h, w))
        return cls((int(H), int(W)), (int(h), int(w)), box)

    @property
    def sx(self) -> float:
        """Horizontal resize factor (model / box width)."""
        return self.out_hw[1] / self.box[2]

    @property
    def sy(self) -> float:
        """Vertical resize factor (model / box height)."""
        return self.out_hw[0] / self.box[3]

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        x0, y0, w, h = self.box
        return x[..., y0 : y0 + h, x0 : x0 + w]

    def video(self, video: torch.Tensor) -> torch.Tensor:
        """[T, 3, H0, W0] float RGB in [0, 1] -> [T, 3, H, W] (bilinear, antialiased)."""
        video = self._crop(video)
        if tuple(video.shape[-2:]) != self.out_hw:
            video = F.interpolate(video, size=self.out_hw, mode="bilinear", align_corners=False,
                                  antialias=True)
            video = video.clamp(0.0, 1.0)
        return video.contiguous()

    def nearest(self, maps: torch.Tensor) -> torch.Tensor:
        """[T, H0, W0] depth (or a bool / integer mask) -> [T, H, W] by nearest-exact sampling."""
        maps = self._crop(maps)
        if tuple(maps.shape[-2:]) != self.out_hw:
            dtype = maps.dtype
            work = maps.to(torch.uint8) if dtype == torch.bool else maps
            maps = F.interpolate(work[:, None], size=self.out_hw, mode="nearest-exact")[:, 0].to(dtype)
        return maps.contiguous()

    def intrinsics(self, K):
        """[..., 3, 3] source intrinsics (pixels; torch or numpy) -> the same at model resolution."""
        x0, y0, _, _ = self.box
        if isinstance(K, torch.Tensor):
            return resize_intrinsics(crop_intrinsics(K, float(x0), float(y0)), self.sx, self.sy)
        Kt = torch.as_tensor(np.asarray(K, dtype=np.float64))
        return resize_intrinsics(crop_intrinsics(Kt, float(x0), float(y0)), self.sx, self.sy).numpy()

    def clip(
        self, video: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor, K: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A training / validation clip: video [T, 3, H0, W0] in [0, 1], depth [T, H0, W0] metres,
        mask [T, H0, W0] bool, K [T, 3, 3] -> the same at model resolution."""
        return self.video(video), self.nearest(depth), self.nearest(mask), self.intrinsics(K)

    def _check(self, hw: tuple[int, ...]) -> None:
        if tuple(hw) != self.src_hw:
            raise InputError(
                f"frame is {hw[1]}x{hw[0]}, expected {self.src_hw[1]}x{self.src_hw[0]} like the first frame"
            )

    def image(self, image: np.ndarray) -> np.ndarray:
        """One [H0, W0, 3] uint8 frame -> [H, W, 3] uint8 (:meth:`video`, rounded to uint8)."""
        self._check(image.shape[:2])
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)
        out = self.video(x)[0].permute(1, 2, 0).mul_(255.0).round_()
        return np.ascontiguousarray(out.to(torch.uint8).numpy())

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """One [H0, W0] ground-truth depth map -> [H, W] float32 (:meth:`nearest`)."""
        self._check(depth.shape[:2])
        return self.nearest(torch.from_numpy(np.asarray(depth, dtype=np.float32))[None])[0].numpy()
