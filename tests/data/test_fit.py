"""The one frame fit (data.fit.FrameFit): crop box then resize, against independent references
(hand-computed boxes and pixel mappings, PIL's antialiased bilinear resize of the crop, K checked by
projecting points and by a blob's centroid); training's validation fit and inference agree to the
pixel for 4:3, 16:9 and KITTI-sized sources."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from data.clips import ClipDataset
from data.fit import FrameFit
from data.schema import Frame, Sequence
from recon.errors import InputError
from recon.infer.sources import FrameStream

SOURCES = {"4:3": (480, 640), "16:9": (720, 1280), "KITTI": (375, 1242)}
OUT_HW = (96, 128)


def _project(K, X):
    x = (K @ X.T).T
    return x[:, :2] / x[:, 2:]


def _K(H, W):
    return np.array([[0.8 * W, 0, (W - 1) / 2 + 3.0], [0, 0.8 * W, (H - 1) / 2 - 2.0], [0, 0, 1]])


@pytest.mark.parametrize("policy", ["crop", "resize"])
@pytest.mark.parametrize("src", [(480, 640), (720, 1280), (96, 128)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_adjusted_intrinsics_follow_the_pixels(policy, src):
    """A bright dot drawn at the projection of X lands, after fitting, where the new K projects X."""
    H, W = src
    K = _K(H, W)
    plan = FrameFit.plan((H, W), OUT_HW, policy)
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


def test_1280x720_to_128x96_by_hand():
    """Centred 960x720 box at x0 = 160, scale 2/15 on both axes; model pixel (0, 0) looks along the
    ray of source pixel (160 + 0.5 * 7.5 - 0.5, 0.5 * 7.5 - 0.5) = (163.25, 3.25)."""
    fit = FrameFit.plan((720, 1280), OUT_HW, "crop")
    assert fit.box == (160, 0, 960, 720)
    assert fit.sx == fit.sy == pytest.approx(2 / 15, rel=1e-15)
    K = np.array([[1000.0, 0, 640.0], [0, 990.0, 355.0], [0, 0, 1]])
    Kf = fit.intrinsics(K)
    ray_model = np.linalg.solve(Kf, [0.0, 0.0, 1.0])
    ray_source = np.linalg.solve(K, [163.25, 3.25, 1.0])
    np.testing.assert_allclose(ray_model, ray_source, rtol=0, atol=1e-12)
    assert FrameFit.plan((720, 1280), OUT_HW, "resize").box == (0, 0, 1280, 720)


@pytest.mark.parametrize("src", list(SOURCES.values()), ids=list(SOURCES))
def test_K_maps_points_like_the_crop_then_resize(src):
    H0, W0 = src
    fit = FrameFit.plan(src, OUT_HW, "crop")
    x0, y0, w, h = fit.box
    assert 0 <= x0 and x0 + w <= W0 and 0 <= y0 and y0 + h <= H0
    assert abs(w / h - OUT_HW[1] / OUT_HW[0]) < 2 / min(w, h)  # the model's aspect, up to whole pixels
    K = _K(H0, W0)
    X = np.random.default_rng(1).uniform([-1, -1, 1], [1, 1, 4], (200, 3))
    uv = _project(K, X)
    H, W = OUT_HW
    expected = np.stack([(uv[:, 0] - x0 + 0.5) * W / w - 0.5, (uv[:, 1] - y0 + 0.5) * H / h - 0.5], -1)
    np.testing.assert_allclose(_project(fit.intrinsics(K), X), expected, rtol=0, atol=1e-9)
    Kt = fit.intrinsics(torch.from_numpy(K)[None])  # the torch path (training) is the same map
    np.testing.assert_allclose(Kt[0].numpy(), fit.intrinsics(K), rtol=0, atol=1e-12)


@pytest.mark.parametrize("src", [*SOURCES.values(), (60, 80)], ids=[*SOURCES, "upscale"])
def test_image_resize_matches_pil_on_the_crop(src):
    """PIL's BILINEAR resize (a triangle filter widened by the downscale factor) of the crop alone."""
    rng = np.random.default_rng(2)
    img = rng.random(src, dtype=np.float32)
    fit = FrameFit.plan(src, OUT_HW, "crop")
    x0, y0, w, h = fit.box
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Image.fromarray(mode=...) in Pillow 11+
        ref = np.asarray(Image.fromarray(img[y0 : y0 + h, x0 : x0 + w], mode="F").resize(
            (OUT_HW[1], OUT_HW[0]), Image.BILINEAR))
    out = fit.video(torch.from_numpy(img)[None, None].expand(1, 3, -1, -1).contiguous())[0]
    for c in range(3):
        np.testing.assert_allclose(out[c].numpy(), ref, rtol=0, atol=1e-5)


def test_depth_is_sampled_not_mixed():
    """Nearest-exact: every output depth is the source depth at the pixel the output centre falls in."""
    H0, W0 = 375, 1242
    depth = np.random.default_rng(3).uniform(1, 50, (H0, W0)).astype(np.float32)
    fit = FrameFit.plan((H0, W0), OUT_HW, "crop")
    x0, y0, w, h = fit.box
    out = fit.depth(depth)
    v, u = np.mgrid[0 : OUT_HW[0], 0 : OUT_HW[1]]
    src_u = x0 + np.floor((u + 0.5) * w / OUT_HW[1]).astype(int)
    src_v = y0 + np.floor((v + 0.5) * h / OUT_HW[0]).astype(int)
    np.testing.assert_array_equal(out, depth[src_v, src_u])


def _sequence(src_hw, n=2) -> Sequence:
    H0, W0 = src_hw
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (n, H0, W0, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 8.0, (n, H0, W0)).astype(np.float32)

    def load(i: int) -> Frame:
        return Frame(image=images[i], depth=depths[i], K=_K(H0, W0), cam2world=np.eye(4),
                     timestamp=i / 30.0, index=i)

    return Sequence(name="toy", format="toy", root="", num_frames=n, load=load)


@pytest.mark.parametrize("src", list(SOURCES.values()), ids=list(SOURCES))
def test_validation_fit_and_inference_fit_agree_to_the_pixel(src):
    """ClipDataset without augmentation (validation) and FrameStream (recon run / eval) fit the same
    frame to the same pixels, depth and K (images differ only by inference's rounding to uint8)."""
    seq = _sequence(src)
    clip = ClipDataset([seq], clip_length=2, size=OUT_HW, stride=(1, 1), augment=None, sampling="fixed")[0]
    stream = FrameStream(seq, OUT_HW, "crop", use_source_K=True)
    for t, frame in enumerate(stream):
        train_img = clip["video"][t].permute(1, 2, 0).numpy() * 255.0
        assert np.abs(frame.image.astype(np.float64) - train_img).max() <= 0.5 + 1e-3
        np.testing.assert_array_equal(frame.gt_depth, clip["depth"][t].numpy())
        np.testing.assert_allclose(frame.K, clip["K"][t].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(frame.gt_K, frame.K, rtol=0, atol=0)


def test_crop_keeps_square_pixels_for_16_9():
    plan = FrameFit.plan((720, 1280), OUT_HW, "crop")
    assert plan.sx == plan.sy
    assert plan.image(np.zeros((720, 1280, 3), np.uint8)).shape == (96, 128, 3)


def test_wrong_frame_size_and_policy_are_clear_errors():
    plan = FrameFit.plan((480, 640), OUT_HW)
    with pytest.raises(InputError, match="expected 640x480"):
        plan.image(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(InputError, match="policy"):
        FrameFit.plan((480, 640), OUT_HW, "stretch")
    with pytest.raises(InputError, match="cannot fit"):
        FrameFit.plan((0, 640), OUT_HW)
