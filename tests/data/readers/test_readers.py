"""Every reader on a fixture in its exact on-disk format: unprojected depth, moved by the reader's
cam2world, lands on the analytic scene within the format's quantisation; K, poses and images match
the truth the fixture was written from."""

from __future__ import annotations

import numpy as np
import pytest

from data import FORMATS, load_sequence
from tests.data.readers import fixtures as fx

FR1_K = np.array([[517.3, 0, 318.6], [0, 516.5, 255.3], [0, 0, 1]])
SEVEN_RENDERED_K = np.array([[525.0, 0, 320.0], [0, 525.0, 240.0], [0, 0, 1]])
SEVEN_RAW_K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
TARTAN_K = np.array([[320.0, 0, 320.0], [0, 320.0, 240.0], [0, 0, 1]])

CASES = [
    pytest.param(lambda p: fx.write_tum(p, fx.render(), masks=True), id="tum-intrinsics_txt-masks"),
    pytest.param(
        lambda p: fx.write_tum(p, fx.render(2, 640, 480, FR1_K), by_name=True), id="tum-fr1-640x480"
    ),
    pytest.param(
        lambda p: fx.write_7scenes(p, fx.render(2, 640, 480, SEVEN_RENDERED_K)), id="7scenes-rendered"
    ),
    pytest.param(
        lambda p: fx.write_7scenes(p, fx.render(2, 640, 480, SEVEN_RAW_K), rendered=False), id="7scenes-raw"
    ),
    pytest.param(lambda p: fx.write_scannet(p, fx.render()), id="scannet-color2x-infpose"),
    pytest.param(lambda p: fx.write_sintel(p, fx.render()), id="sintel-dpt-cam"),
    pytest.param(lambda p: fx.write_kitti_depth(p, fx.render(4)), id="kitti_depth-sparse"),
    pytest.param(lambda p: fx.write_tartanair(p, fx.render(2, 640, 480, TARTAN_K)), id="tartanair-ned"),
    pytest.param(lambda p: fx.write_co3d(p, fx.render(), fx.render(2, seed=7)), id="co3d-ndc-float16"),
    pytest.param(
        lambda p: fx.write_dynamic_replica(p, fx.render(), fx.render(seed=8)), id="dynamic_replica-left"
    ),
    pytest.param(lambda p: fx.write_pointodyssey(p, fx.render()), id="pointodyssey-u16"),
    pytest.param(lambda p: fx.write_vkitti2(p, fx.render()), id="vkitti2-cm-sky"),
    pytest.param(lambda p: fx.write_scannetpp_iphone(p, fx.render()), id="scannetpp-iphone-colmap"),
]


def world_points(depth: np.ndarray, K: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """[N, 3] world points of the valid pixels (naive pinhole unprojection, pixel centres at integers)."""
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    return cam @ cam2world[:3, :3].T + cam2world[:3, 3]


@pytest.mark.filterwarnings("ignore:.*(no depth within|not registered|non-finite \\(-inf\\) poses)")
@pytest.mark.parametrize("make", CASES)
def test_reader_round_trip_lands_on_scene(tmp_path, make):
    w = make(tmp_path)
    seq = load_sequence(w.root)  # the format is detected from the marker files
    assert seq.format == w.format
    assert len(seq) == len(w.gt.images)
    for i, frame in enumerate(seq):
        gt_image = w.gt.images[i]
        assert frame.image.dtype == np.uint8 and frame.image.shape == gt_image.shape
        err = np.abs(frame.image.astype(int) - gt_image).mean()
        assert err == 0 if w.image_exact else err < 3.0, f"frame {i}: image differs by {err:.2f} on average"
        np.testing.assert_allclose(frame.K, w.gt.K[i], atol=1e-6, err_msg=f"frame {i}: K")
        if w.format != "kitti_depth":  # the depth benchmark has no poses
            np.testing.assert_allclose(frame.cam2world, w.gt.cam2world[i], atol=1e-6, err_msg=f"frame {i}")
        pose = frame.cam2world if frame.cam2world is not None else w.gt.cam2world[i]
        assert frame.depth.dtype == np.float32 and frame.depth.shape == gt_image.shape[:2]
        expected_valid = ~w.invalid[i] if w.invalid is not None else np.ones(gt_image.shape[:2], bool)
        np.testing.assert_array_equal(frame.depth > 0, expected_valid, err_msg=f"frame {i}: valid pixels")
        dist = fx.scene_distance(world_points(frame.depth, frame.K, pose))
        assert dist.max() <= w.point_tol, f"frame {i}: a point lies {dist.max():.2e} m off the scene"


def test_every_format_has_a_fixture():
    covered = {
        "tum",
        "7scenes",
        "scannet",
        "sintel",
        "kitti_depth",
        "tartanair",
        "co3d",
        "dynamic_replica",
        "pointodyssey",
        "vkitti2",
        "scannetpp",
    }
    # kitti_odometry and video have no depth: tested in test_reader_cases.py / test_video_reader.py
    assert covered | {"kitti_odometry", "video"} == set(FORMATS)
