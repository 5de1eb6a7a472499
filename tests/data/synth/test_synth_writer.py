"""TUM-layout writer round trip (cv2 for PNGs and the video, evo for groundtruth) and `recon synth`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from evo.tools.file_interface import read_tum_trajectory_file

from data.schema import Sequence
from data.synth import DEPTH_SCALE, SynthConfig, synthetic_sequence, write_tum_sequence
from recon.cli import main as recon_main


def _list(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#")
    return [tuple(line.split()) for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    seq = synthetic_sequence(SynthConfig(num_frames=6, width=48, height=32, num_dynamic=2), seed=4)
    out = write_tum_sequence(seq, tmp_path_factory.mktemp("w") / "seq", fps=15.0)
    return seq, out


def test_pngs_round_trip_exactly(written):
    seq, out = written
    rgb, depth, mask = (_list(out / f"{k}.txt") for k in ("rgb", "depth", "mask"))
    assert len(rgb) == len(depth) == len(mask) == len(seq)
    for i, frame in enumerate(seq):
        assert rgb[i][0] == depth[i][0] == mask[i][0] == f"{frame.timestamp:.6f}"
        image = cv2.imread(str(out / rgb[i][1]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(image[:, :, ::-1], frame.image)
        d = cv2.imread(str(out / depth[i][1]), cv2.IMREAD_UNCHANGED)
        assert d.dtype == np.uint16 and d.shape == frame.depth.shape
        assert np.abs(d / DEPTH_SCALE - frame.depth).max() <= 0.5 / DEPTH_SCALE + 1e-7
        m = cv2.imread(str(out / mask[i][1]), cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint8 and np.array_equal(m == 255, frame.mask) and set(np.unique(m)) <= {0, 255}
    assert any(f.mask.any() for f in seq), "the dynamic objects should be visible in some frame"


def test_groundtruth_read_by_evo_matches_rendered_poses(written):
    seq, out = written
    traj = read_tum_trajectory_file(str(out / "groundtruth.txt"))
    assert (out / "groundtruth.txt").read_text().startswith("#")
    poses = np.stack([f.cam2world for f in seq])
    np.testing.assert_allclose(np.stack(traj.poses_se3), poses, atol=1e-9)
    np.testing.assert_allclose(traj.timestamps, [f.timestamp for f in seq], atol=1e-6)


def test_intrinsics_meta_and_video(written):
    seq, out = written
    lines = (out / "intrinsics.txt").read_text().splitlines()
    assert lines[0].startswith("#") and len(lines) == 2
    fx, fy, cx, cy = map(float, lines[1].split())
    K = seq[0].K
    np.testing.assert_allclose([fx, fy, cx, cy], [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], rtol=1e-8)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 4 and meta["fps"] == 15.0 and meta["depth_scale"] == DEPTH_SCALE
    assert meta["config"]["num_dynamic"] == 2 and meta["num_frames"] == 6
    cap = cv2.VideoCapture(str(out / "video.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == 6 and frames[0].shape == (32, 48, 3)
    psnr = cv2.PSNR(frames[0], seq[0].image[:, :, ::-1].copy())
    assert psnr > 20.0, f"video frame 0 PSNR {psnr:.1f} dB vs the PNG"


def test_failed_write_leaves_no_folder(tmp_path):
    good = synthetic_sequence(SynthConfig(num_frames=4, width=16, height=12), seed=1)

    def load(i):
        if i == 2:
            raise OSError("disk on fire")
        return good[i]

    with pytest.raises(OSError):
        write_tum_sequence(Sequence("broken", "synthetic", "", 4, load), tmp_path / "seq")
    assert list(tmp_path.iterdir()) == []


def test_recon_synth_is_deterministic_per_seed(tmp_path, capsys):
    args = ["--count", "2", "--frames", "3", "--width", "32", "--height", "24", "--dynamic", "1", "--quiet"]
    assert recon_main(["synth", str(tmp_path / "a"), *args, "--seed", "9", "--no-video"]) == 0
    assert recon_main(["synth", str(tmp_path / "b"), *args, "--seed", "9", "--no-video"]) == 0
    assert recon_main(["synth", str(tmp_path / "c"), *args, "--seed", "10", "--no-video"]) == 0
    for k in ("seq_000", "seq_001"):
        a, b, c = (tmp_path / r / k for r in "abc")
        assert not (a / "video.mp4").exists()
        assert (a / "groundtruth.txt").read_bytes() == (b / "groundtruth.txt").read_bytes()
        names = [n for _, n in _list(a / "rgb.txt")]
        assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
        assert (a / "groundtruth.txt").read_bytes() != (c / "groundtruth.txt").read_bytes()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--frames", "0"], "--frames"),
        (["--width", "4"], "--width"),
        (["--fov", "90", "30"], "--fov"),
    ],
    ids=["zero-frames", "tiny-width", "fov-order"],
)
def test_recon_synth_bad_args_exit_2_with_a_message(tmp_path, capsys, argv, message):
    assert recon_main(["synth", str(tmp_path / "out"), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err


def test_recon_synth_unwritable_or_existing_out(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert recon_main(["synth", str(blocker), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert recon_main(["synth", str(blocker / "sub"), "--quiet"]) == 2
    assert "cannot create" in capsys.readouterr().err
    (tmp_path / "out" / "seq_000").mkdir(parents=True)
    assert recon_main(["synth", str(tmp_path / "out"), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_tum_reader_reads_the_written_sequence_back(written):
    from data import load_sequence

    seq, out = written
    back = load_sequence(out)
    assert back.format == "tum" and len(back) == len(seq)
    for i in (0, len(seq) - 1):
        a, b = seq[i], back[i]
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        # Half a quantisation step, plus float32 rounding where it happens: of the product
        # depth * DEPTH_SCALE before np.round (one spacing there, back in metres) and of the decoded
        # value (one spacing at the depth).
        scaled = (a.depth * DEPTH_SCALE).astype(np.float32)
        bound = (0.5 + np.spacing(scaled)) / DEPTH_SCALE + np.spacing(a.depth.astype(np.float32))
        assert (np.abs(a.depth - b.depth) <= bound).all()
        np.testing.assert_allclose(b.K, a.K, rtol=1e-8)
        np.testing.assert_allclose(b.cam2world, a.cam2world, atol=1e-9)
        assert b.timestamp == pytest.approx(a.timestamp, abs=1e-6)
