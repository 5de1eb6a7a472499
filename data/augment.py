"""Clip-consistent geometry and colour augmentation (one set of parameters for every frame of a clip).

Geometry: a random crop box in source pixels (:func:`random_crop_box`), fitted to the model
resolution by the one frame fit, ``data.fit.FrameFit`` (the same crop-then-resize that validation
and inference use, K and depth following exactly). Colour: kornia's brightness,
contrast, saturation and hue adjustments with factors drawn once per clip.

All randomness comes from a ``numpy.random.Generator`` the caller passes in (the clip sampler
derives it from (seed, epoch, index)), so results do not depend on DataLoader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia.enhance as KE
import numpy as np
import torch

from data.fit import center_crop_box
from recon.errors import ConfigError


@dataclass
class ClipAugment:
    """Augmentation settings (a typed config; YAML keys have the same names).

    Attributes:
        crop_scale: range of the crop's area as a fraction of the largest crop with the target
            aspect ratio (random resized crop).
        crop_ratio: range of the crop's aspect ratio relative to the target's (log-uniform);
            (1, 1) keeps square pixels, other values give fx != fy (K follows exactly).
        brightness: additive brightness shift drawn from [-brightness, brightness].
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        saturation: saturation factor drawn from [1 - saturation, 1 + saturation].
        hue: hue shift in radians drawn from [-hue, hue] (kornia's convention, |hue| <= pi).
        color_prob: probability that a clip gets colour jitter at all.
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.15
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    color_prob: float = 0.8

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"augment.crop_scale: expected 0 < low <= high <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi:
            raise ConfigError(f"augment.crop_ratio: expected 0 < low <= high, got {self.crop_ratio}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"augment.{name}: expected in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= math.pi:
            raise ConfigError(f"augment.hue: expected in [0, pi] radians, got {self.hue}")
        if not 0.0 <= self.color_prob <= 1.0:
            raise ConfigError(f"augment.color_prob: expected in [0, 1], got {self.color_prob}")


def random_crop_box(
    rng: np.random.Generator, src_hw: tuple[int, int], out_hw: tuple[int, int], aug: ClipAugment
) -> tuple[int, int, int, int]:
    """A random resized crop box (x0, y0, w, h) in source pixels, inside the image.

    Area = U(crop_scale) times the largest box of the target aspect; aspect = target aspect times
    a log-uniform factor in crop_ratio; position uniform.
    """
    H0, W0 = src_hw
    _, _, w_max, h_max = center_crop_box(src_hw, out_hw)
    area = rng.uniform(*aug.crop_scale)
    ratio = math.exp(rng.uniform(math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1])))
    w = int(min(W0, max(1, round(w_max * math.sqrt(area * ratio)))))
    h = int(min(H0, max(1, round(h_max * math.sqrt(area / ratio)))))
    x0 = int(rng.integers(0, W0 - w + 1))
    y0 = int(rng.integers(0, H0 - h + 1))
    return x0, y0, w, h


def color_jitter_clip(video: torch.Tensor, rng: np.random.Generator, aug: ClipAugment) -> torch.Tensor:
    """Brightness / contrast / saturation / hue jitter with ONE set of factors for the whole clip.

    Args:
        video: [T, 3, H, W] float RGB in [0, 1].
        rng: the clip's generator.
        aug: ranges.

    Returns:
        [T, 3, H, W] float in [0, 1].
    """
    if rng.uniform() >= aug.color_prob:
        return video
    brightness = rng.uniform(-aug.brightness, aug.brightness)
    contrast = rng.uniform(1.0 - aug.contrast, 1.0 + aug.contrast)
    saturation = rng.uniform(1.0 - aug.saturation, 1.0 + aug.saturation)
    hue = rng.uniform(-aug.hue, aug.hue)
    order = rng.permutation(4)
    for op in order:
        if op == 0:
            video = KE.adjust_brightness(video, brightness)
        elif op == 1:
            video = KE.adjust_contrast(video, contrast)
        elif op == 2:
            video = KE.adjust_saturation(video, saturation)
        else:
            video = KE.adjust_hue(video, hue)
    return video.clamp(0.0, 1.0)
