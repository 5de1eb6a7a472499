"""Format-specific behaviour (association, skipped frames, camera selection, intrinsics sources)
and bad input: every mistake raises recon.errors.InputError / ConfigError naming the path."""

from __future__ import annotations

import gzip
import json
import warnings

import numpy as np
import pytest

from data import detect_format, load_sequence
from recon.errors import ConfigError, InputError
from tests.data.readers import fixtures as fx


def _quiet_load(root, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_sequence(root, **options)


# ------------------------------------------------------------------ TUM


def test_tum_association_drops_unmatched_frame_and_loads_masks(tmp_path):
    w = fx.write_tum(tmp_path, fx.render(), masks=True)
    with pytest.warns(UserWarning, match="1 RGB frames have no depth"):
        seq = load_sequence(w.root)
    assert seq.meta["dropped_without_depth"] == 1 and seq.meta["frames_without_pose"] == 0
    assert seq.meta["intrinsics_source"].endswith("intrinsics.txt")
    for i, frame in enumerate(seq):
        assert frame.timestamp == pytest.approx(w.gt.timestamps[i], abs=1e-6)
        np.testing.assert_array_equal(frame.mask, w.gt.depth[i] < 3.0)


def test_tum_fr1_name_gives_published_intrinsics(tmp_path):
    K = np.array([[517.3, 0, 318.6], [0, 516.5, 255.3], [0, 0, 1]])
    w = fx.write_tum(tmp_path, fx.render(1, 640, 480, K), by_name=True)
    seq = _quiet_load(w.root)
    np.testing.assert_array_equal(seq[0].K, K)
    assert "freiburg1" in seq.meta["intrinsics_source"]


@pytest.mark.parametrize(
    "folder, fx_fy_cx_cy",
    [
        pytest.param("rgbd_dataset_freiburg2_desk", (520.9, 521.0, 325.1, 249.7), id="fr2"),
        pytest.param("rgbd_dataset_freiburg3_walking_xyz", (535.4, 539.2, 320.1, 247.6), id="fr3"),
        pytest.param("fr1_desk", (517.3, 516.5, 318.6, 255.3), id="fr1-short"),
        pytest.param("rgbd_bonn_balloon", (542.822841, 542.576870, 315.593520, 237.756098), id="bonn"),
    ],
)
def test_tum_intrinsics_from_sequence_name(tmp_path, folder, fx_fy_cx_cy):
    seq_dir = tmp_path / folder
    fx.imwrite_rgb(seq_dir / "rgb" / "1.000000.png", np.zeros((480, 640, 3), np.uint8))
    (seq_dir / "rgb.txt").write_text("# color images\n# timestamp filename\n1.000000 rgb/1.000000.png\n")
    seq = load_sequence(seq_dir)
    fx_, fy_, cx_, cy_ = fx_fy_cx_cy
    np.testing.assert_array_equal(seq[0].K, [[fx_, 0, cx_], [0, fy_, cy_], [0, 0, 1]])
    assert seq[0].depth is None and seq[0].cam2world is None and seq.meta["frames_without_pose"] == 1
    assert seq.meta["variant"] == ("bonn" if "bonn" in folder else "tum")


def test_tum_unknown_intrinsics_names_what_to_provide(tmp_path):
    w = fx.write_tum(tmp_path, fx.render(1))
    (w.root / "intrinsics.txt").unlink()
    with pytest.raises(InputError, match="intrinsics.txt"):
        _quiet_load(w.root)
    K = w.gt.K[0]
    seq = _quiet_load(w.root, K=(K[0, 0], K[1, 1], K[0, 2], K[1, 2]))  # the K option resolves it
    np.testing.assert_array_equal(seq[0].K, K)
    with pytest.raises(ConfigError, match="K: expected a 3x3 matrix or \\(fx, fy, cx, cy\\)"):
        _quiet_load(w.root, K=[[1.0, 2.0]])


def test_tum_fr1_intrinsics_refuse_resized_images(tmp_path):
    w = fx.write_tum(tmp_path, fx.render(1), by_name=True)  # 32x24 images in a freiburg1 folder
    with pytest.raises(InputError, match="640x480.*32x24"):
        _quiet_load(w.root)


def test_tum_unassociable_timestamps(tmp_path):
    w = fx.write_tum(tmp_path, fx.render(2))
    lines = (w.root / "depth.txt").read_text().splitlines()
    shifted = [
        ln if ln.startswith("#") else f"{float(ln.split()[0]) + 5:.6f} {ln.split()[1]}" for ln in lines
    ]
    (w.root / "depth.txt").write_text("\n".join(shifted) + "\n")
    with pytest.raises(InputError, match=r"depth\.txt: no timestamp within 0\.02 s"):
        load_sequence(w.root)


def test_tum_non_finite_pose_line(tmp_path):
    w = fx.write_tum(tmp_path, fx.render(1))
    with open(w.root / "groundtruth.txt", "a") as f:
        f.write("1305031109.0 nan 0 0 0 0 0 1\n")
    with pytest.raises(InputError, match=r"groundtruth\.txt.*non-finite"):
        _quiet_load(w.root)


def test_tum_missing_and_truncated_image(tmp_path):
    w = fx.write_tum(tmp_path, fx.render(2))
    seq = _quiet_load(w.root)
    first = sorted((w.root / "rgb").iterdir())[0]
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=f"{first.name}: unreadable or truncated image"):
        seq[0]
    first.unlink()
    with pytest.raises(InputError, match=f"{first.name}: missing file"):
        seq[0]


# ------------------------------------------------------------------ 7-Scenes, ScanNet


def test_7scenes_raw_depth_is_flagged_unregistered(tmp_path):
    K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
    w = fx.write_7scenes(tmp_path, fx.render(1, 640, 480, K), rendered=False)
    with pytest.warns(UserWarning, match="not registered"):
        seq = load_sequence(w.root)
    assert seq.meta["depth_registered"] is False
    with pytest.raises(InputError, match=r"depth\.proj\.png: missing file"):
        load_sequence(w.root, depth="rendered")
    with pytest.raises(ConfigError, match="'auto', 'rendered' or 'raw'"):
        load_sequence(w.root, depth="projected")


def test_7scenes_non_finite_pose_names_file(tmp_path):
    w = fx.write_7scenes(
        tmp_path, fx.render(1, 640, 480, np.array([[525.0, 0, 320], [0, 525, 240], [0, 0, 1]]))
    )
    (w.root / "frame-000000.pose.txt").write_text("nan 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(InputError, match=r"frame-000000\.pose\.txt: expected finite poses"):
        load_sequence(w.root)[0]


def test_scannet_skips_inf_poses_with_count(tmp_path):
    w = fx.write_scannet(tmp_path, fx.render())
    with pytest.warns(UserWarning, match="skipped 1 frames with non-finite"):
        seq = load_sequence(w.root)
    assert seq.meta["skipped_invalid_pose"] == 1 and seq.meta["frame_ids"] == [0, 2, 3]
    assert seq.meta["color_resized_to_depth"] == [32, 24]


# ------------------------------------------------------------------ binary and JSON formats


def test_sintel_bad_tag_and_truncated_dpt(tmp_path):
    w = fx.write_sintel(tmp_path, fx.render(1))
    dpt = w.root.parent.parent / "depth" / "alley_1" / "frame_0001.dpt"
    data = dpt.read_bytes()
    dpt.write_bytes(data[:-10])
    with pytest.raises(InputError, match=r"frame_0001\.dpt: \.dpt header says 32x24"):
        load_sequence(w.root)[0]
    dpt.write_bytes(b"\0\0\0\0" + data[4:])
    with pytest.raises(InputError, match="expected the float32 tag 202021.25"):
        load_sequence(w.root)[0]


def test_co3d_category_folder_needs_sequence(tmp_path):
    w = fx.write_co3d(tmp_path, fx.render(2), fx.render(2, seed=7))
    category = w.root.parent
    with pytest.raises(InputError, match="pass sequence="):
        load_sequence(category, format="co3d")
    other = load_sequence(category, format="co3d", sequence="189_20393_38136")
    assert len(other) == 2 and other.name == "189_20393_38136"
    with pytest.raises(InputError, match="no frames of sequence 'nope'"):
        load_sequence(category, format="co3d", sequence="nope")


def test_co3d_corrupt_annotations(tmp_path):
    w = fx.write_co3d(tmp_path, fx.render(1), fx.render(1, seed=7))
    (w.root.parent / "frame_annotations.jgz").write_bytes(gzip.compress(b"{not json"))
    with pytest.raises(InputError, match="frame_annotations.jgz: not a readable gzipped JSON"):
        load_sequence(w.root)


def test_dynamic_replica_right_camera(tmp_path):
    left, right = fx.render(2), fx.render(2, seed=8)
    w = fx.write_dynamic_replica(tmp_path, left, right)
    seq = load_sequence(
        w.root.parent, format="dynamic_replica", sequence="009850-3_obj_source", camera="right"
    )
    np.testing.assert_allclose(seq[1].cam2world, right.cam2world[1], atol=1e-6)
    by_folder = load_sequence(w.root.parent / "009850-3_obj_source_right")  # camera from the folder name
    assert by_folder.name == "009850-3_obj_source"
    np.testing.assert_allclose(by_folder[0].cam2world, right.cam2world[0], atol=1e-6)


def test_dynamic_replica_frame_numbers_must_be_integers(tmp_path):
    w = fx.write_dynamic_replica(tmp_path, fx.render(1), fx.render(1, seed=8))
    path = w.root.parent / "frame_annotations_train.jgz"
    frames = json.loads(gzip.decompress(path.read_bytes()))
    del frames[0]["frame_number"]
    path.write_bytes(gzip.compress(json.dumps(frames).encode()))
    with pytest.raises(InputError, match="integer frame_number"):
        load_sequence(w.root)


def test_pointodyssey_anno_missing_array(tmp_path):
    w = fx.write_pointodyssey(tmp_path, fx.render(1))
    np.savez(w.root / "anno.npz", intrinsics=w.gt.K)
    with pytest.raises(InputError, match=r"anno\.npz: missing array\(s\) \['extrinsics'\]"):
        load_sequence(w.root)


def test_vkitti2_right_camera_pose(tmp_path):
    w = fx.write_vkitti2(tmp_path, fx.render(2))
    import shutil

    shutil.copytree(w.root / "frames" / "rgb" / "Camera_0", w.root / "frames" / "rgb" / "Camera_1")
    seq = load_sequence(w.root, camera=1)
    # camera 1 is 0.53 m to the right of camera 0: its centre is camera 0's centre + 0.53 * x axis
    T0 = w.gt.cam2world[0]
    np.testing.assert_allclose(seq[0].cam2world[:3, 3], T0[:3, 3] + 0.532725 * T0[:3, 0], atol=1e-6)
    assert seq[0].depth is None  # no Camera_1 depth folder in this fixture


# ------------------------------------------------------------------ KITTI, ScanNet++ fisheye


def test_kitti_depth_timestamps_and_missing_calib(tmp_path):
    w = fx.write_kitti_depth(tmp_path, fx.render(3))
    seq = load_sequence(w.root)
    # raw timestamps.txt: 0.103 s apart, relative to the drive's first image (frame 0 has no depth)
    assert [round(f.timestamp, 6) for f in seq] == [0.103, 0.206]
    (w.root.parent / "calib_cam_to_cam.txt").unlink()
    with pytest.raises(InputError, match="missing calib_cam_to_cam.txt"):
        load_sequence(w.root)


def test_kitti_odometry_poses_of_colour_camera(tmp_path):
    w = fx.write_kitti_odometry(tmp_path, fx.render(3))
    seq = load_sequence(w.root)
    assert seq.format == "kitti_odometry"
    for i, frame in enumerate(seq):
        np.testing.assert_allclose(frame.cam2world, w.gt.cam2world[i], atol=1e-6)
        np.testing.assert_allclose(frame.K, w.gt.K[i], atol=1e-6)
        assert frame.depth is None and frame.timestamp == pytest.approx(i * 0.1036)
    np.testing.assert_allclose(seq.meta["camera_offset_from_cam0"], [0.0597, -0.0004, 0.0027], atol=1e-9)


def test_scannetpp_fisheye_is_undistorted_to_pinhole(tmp_path):
    w = fx.write_scannetpp_iphone(tmp_path, fx.render(1))
    cams = w.root / "colmap" / "cameras.txt"
    model = cams.read_text().splitlines()[-1].split()
    model[1] = "OPENCV_FISHEYE"
    cams.write_text(" ".join(model + ["0.05", "-0.01", "0.002", "0.0"]) + "\n")
    seq = load_sequence(w.root)
    frame = seq[0]
    assert seq.meta["undistorted_from"] == "OPENCV_FISHEYE"
    np.testing.assert_allclose(frame.K, w.gt.K[0], atol=1e-9)  # pinhole with the same fx, fy, cx, cy
    assert frame.image.shape == (24, 32, 3) and frame.depth.shape == (24, 32)
    # the image centre barely moves under a mild fisheye; the corners do
    assert np.abs(frame.image[10:14, 14:18].astype(int) - w.gt.images[0][10:14, 14:18]).mean() < 25


def test_colmap_bad_camera_model(tmp_path):
    w = fx.write_scannetpp_iphone(tmp_path, fx.render(1))
    (w.root / "colmap" / "cameras.txt").write_text("1 FOV 64 48 30 30 32 24 0.1\n")
    with pytest.raises(InputError, match=r"cameras\.txt:1: expected 'CAMERA_ID MODEL"):
        load_sequence(w.root)


# ------------------------------------------------------------------ registry


def test_detect_unknown_layout_lists_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a known dataset layout.*tum, 7scenes, scannet"):
        detect_format(tmp_path)
    with pytest.raises(InputError, match="no such file or directory"):
        load_sequence(tmp_path / "missing")


def test_unknown_format_and_option(tmp_path):
    w = fx.write_sintel(tmp_path, fx.render(1))
    with pytest.raises(ConfigError, match="unknown dataset format 'sintel2'"):
        load_sequence(w.root, format="sintel2")
    with pytest.raises(ConfigError, match="no option\\(s\\) fov.*accepted: scene"):
        load_sequence(w.root, fov=3)


def test_wrong_layout_for_forced_format(tmp_path):
    w = fx.write_sintel(tmp_path, fx.render(1))
    with pytest.raises(InputError, match="rgb.txt: missing file"):
        load_sequence(w.root, format="tum")
