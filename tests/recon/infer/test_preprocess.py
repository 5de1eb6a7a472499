"""Frame fitting: the adjusted K projects scene points to the same pixels as the fitted image."""

import numpy as np
import pytest

from recon.errors import InputError
from recon.infer.preprocess import plan_fit


def _project(K, X):
    x = (K @ X.T).T
    return x[:, :2] / x[:, 2:]


@pytest.mark.parametrize("policy", ["crop", "resize"])
@pytest.mark.parametrize("src", [(480, 640), (720, 1280), (96, 128)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_adjusted_intrinsics_follow_the_pixels(policy, src):
    """A bright dot drawn at the projection of X lands, after fitting, where the new K projects X."""
    H, W = src
    K = np.array([[0.8 * W, 0, (W - 1) / 2 + 3.0], [0, 0.8 * W, (H - 1) / 2 - 2.0], [0, 0, 1]])
    plan = plan_fit((H, W), (96, 128), policy)
    rng = np.random.default_rng(0)
    for _ in range(5):
        X = np.array([[rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15), 1.0]])
        u, v = _project(K, X)[0]
        img = np.zeros((H, W, 3), np.uint8)
        # A Gaussian blob centred (sub-pixel) at the projection; its centroid survives resampling.
        yy, xx = np.mgrid[0:H, 0:W]
        sigma = max(H, W) / 40
        img[..., 0] = (255 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * sigma**2))).astype(np.uint8)
        out = plan.image(img).astype(np.float64)[..., 0]
        oy, ox = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
        centroid = np.array([(out * ox).sum() / out.sum(), (out * oy).sum() / out.sum()])
        expected = _project(plan.intrinsics(K), X)[0]
        assert np.abs(centroid - expected).max() < 0.15, (centroid, expected)


def test_crop_keeps_aspect_and_output_size():
    plan = plan_fit((720, 1280), (96, 128), "crop")
    # aspect kept up to rounding the scaled size to whole pixels
    assert abs(plan.sx * 1280 - plan.sy * 1280) <= 1.0
    assert plan.image(np.zeros((720, 1280, 3), np.uint8)).shape == (96, 128, 3)


def test_wrong_frame_size_and_policy_are_clear_errors():
    plan = plan_fit((480, 640), (96, 128))
    with pytest.raises(InputError, match="expected 640x480"):
        plan.image(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(InputError, match="policy"):
        plan_fit((480, 640), (96, 128), "stretch")
