"""The pair motion encoder's Lucas-Kanade layer against known image shifts (scipy.ndimage.shift)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from recon.model.motion_encoder import CELL, LEVELS, PairMotionEncoder, lucas_kanade, motion_frames


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A band-limited random texture (Gaussian-blurred noise), float64 [h, w]."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal((h, w)), 2.0) * 5.0


@pytest.mark.parametrize("dx, dy", [(0.4, -0.3), (2.5, 1.2), (-5.0, 3.0), (0.0, 0.0)])
def test_lucas_kanade_recovers_a_translation(dx, dy):
    """earlier = current moved by (dx, dy) pixels, so current(x) = earlier(x + d): every interior
    cell's flow is (dx, dy) within 0.1 px (the border cells see the shifted-in edge)."""
    big = _texture(96 + 32, 128 + 32)
    current = big[16:-16, 16:-16]
    earlier = ndimage.shift(big, (dy, dx), order=3, mode="nearest")[16:-16, 16:-16]
    pair = [torch.from_numpy(np.ascontiguousarray(x)).float()[None, None] for x in (current, earlier)]
    grid = (96 // CELL, 128 // CELL)
    out = lucas_kanade(pair[0], pair[1], grid)
    assert out.shape == (1, 2 + len(LEVELS), *grid)
    flow = out[0, :2, 1:-1, 1:-1] * CELL
    err = (flow - torch.tensor([dx, dy]).view(2, 1, 1)).norm(dim=0)
    assert float(err.median()) < 0.1, float(err.median())
    assert float(err.quantile(0.9)) < 0.25, float(err.quantile(0.9))


def test_texture_strength_is_low_where_the_image_is_flat():
    """The per-level texture channel orders a flat half below a textured half."""
    img = _texture(96, 128)
    img[:, :64] = 0.0
    x = torch.from_numpy(img).float()[None, None]
    strength = lucas_kanade(x, x, (12, 16))[0, -1]
    assert float(strength[:, 1:7].max()) < float(strength[:, 9:].min())


def test_encoder_shapes_and_grey_frames():
    """Frames [M, 3, H, W] -> grey motion frames pooled by the factor -> features [M, out]."""
    images = torch.randn(3, 3, 192, 256)
    frames = motion_frames(images, 2)
    torch.testing.assert_close(frames[:, 0, 0, 0], images[:, :, :2, :2].mean((1, 2, 3)))
    enc = PairMotionEncoder((192, 256), 8, 24)
    assert enc.grid == (12, 16)
    assert enc(frames, frames.flip(0)).shape == (3, 24)
