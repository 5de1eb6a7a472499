"""Plain videos (OpenCV) and image folders: frame counts, order, guessed vs given intrinsics, errors."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from data import load_sequence
from recon.errors import ConfigError, InputError
from tests.data.readers import fixtures as fx


def _write_video(path, images, fps=24.0):
    H, W = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for img in images:
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_file_frames_timestamps_and_guessed_K(tmp_path):
    gt = fx.render(5, 64, 48)
    path = tmp_path / "clip.mp4"
    _write_video(path, gt.images)
    with pytest.warns(UserWarning, match="assuming a 60 degree horizontal field of view"):
        seq = load_sequence(path)
    assert seq.format == "video" and len(seq) == 5 and seq.meta["intrinsics_guessed"] is True
    f = 32 / math.tan(math.radians(30))  # W/2 / tan(FoV/2)
    np.testing.assert_allclose(seq[0].K, [[f, 0, 31.5], [0, f, 23.5], [0, 0, 1]])
    frames = list(seq)
    for i, frame in enumerate(frames):
        assert frame.timestamp == pytest.approx(i / 24.0)
        assert frame.depth is None and frame.cam2world is None
        # lossy codec: each decoded frame is closest to its own source frame (order and RGB channel order)
        errs = [np.abs(frame.image.astype(int) - g).mean() for g in gt.images]
        assert int(np.argmin(errs)) == i and errs[i] < 20
    assert np.array_equal(seq[2].image, frames[2].image)  # random access after sequential reads


def test_video_K_option_and_bad_video(tmp_path):
    gt = fx.render(2, 64, 48)
    path = tmp_path / "clip.mp4"
    _write_video(path, gt.images)
    seq = load_sequence(path, K=(50.0, 51.0, 30.0, 20.0))
    assert seq.meta["intrinsics_guessed"] is False
    np.testing.assert_array_equal(seq[0].K, [[50, 0, 30], [0, 51, 20], [0, 0, 1]])
    with pytest.raises(ConfigError, match="positive focal lengths"):
        load_sequence(path, K=(-1.0, 1.0, 0.0, 0.0))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="broken.mp4"):
        load_sequence(bad)


def test_image_folder_natural_order_and_fov(tmp_path):
    gt = fx.render(3)
    for i, name in enumerate(["img2.png", "img10.png", "img100.png"]):  # natural, not lexical order
        fx.imwrite_rgb(tmp_path / name, gt.images[i])
    seq = load_sequence(tmp_path, fov_deg=90.0, fps=10.0)
    assert seq.format == "video" and seq.meta["intrinsics_guessed"] is False
    for i, frame in enumerate(seq):
        np.testing.assert_array_equal(frame.image, gt.images[i])
        assert frame.timestamp == pytest.approx(i / 10.0)
    np.testing.assert_allclose(seq[0].K[0, 0], 16.0)  # W/2 / tan(45 degrees)


def test_image_folder_mixed_sizes_names_first_offender(tmp_path):
    fx.imwrite_rgb(tmp_path / "a0.png", fx.render(1).images[0])
    fx.imwrite_rgb(tmp_path / "a1.png", fx.render(1).images[0])
    fx.imwrite_rgb(tmp_path / "a2.png", fx.render(1, 40, 30).images[0])
    fx.imwrite_rgb(tmp_path / "a3.png", fx.render(1, 40, 30).images[0])
    with pytest.raises(InputError, match=r"a2\.png: image is 40x30, expected 32x24"):
        load_sequence(tmp_path, K=np.eye(3))


def test_image_folder_truncated_jpeg(tmp_path):
    fx.imwrite_rgb(tmp_path / "f0.jpg", fx.render(1).images[0])
    data = (tmp_path / "f0.jpg").read_bytes()
    (tmp_path / "f0.jpg").write_bytes(data[: len(data) - 40])
    seq = load_sequence(tmp_path, K=np.eye(3))
    with pytest.raises(InputError, match=r"f0\.jpg: truncated JPEG"):
        seq[0]
