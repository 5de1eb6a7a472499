"""`recon run` / `recon demo` end to end, outputs read back by real consumers (evo, open3d, rerun)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import open3d as o3d
import pytest
from evo.tools import file_interface
from rerun.chunk import RrdReader

from recon.cli import main

ENTITIES = (
    "/world/camera",
    "/world/camera/image",
    "/world/camera/depth",
    "/world/camera/confidence",
    "/world/points",
    "/metrics/fps",
    "/metrics/latency_ms",
    "/metrics/rss_mb",
)


def _rrd_rows(path):
    rows = Counter()
    for chunk in RrdReader(str(path)).stream().to_chunks():
        if not chunk.is_static:
            rows[chunk.entity_path] += chunk.num_rows
    return rows


def test_run_on_dataset_folder_writes_valid_outputs(tmp_path, small_checkpoint, synthetic_folder, capsys):
    out, rrd = tmp_path / "out", tmp_path / "rec.rrd"
    code = main(
        [
            "run",
            str(synthetic_folder),
            "--checkpoint",
            str(small_checkpoint),
            "--out",
            str(out),
            "--rrd",
            str(rrd),
            "--save-depth",
            "--quiet",
            "--stride",
            "2",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 6
    assert summary["pose_fallbacks"] == 0
    # trajectory: evo reads it, one pose per frame, first pose = identity (world = first camera)
    traj = file_interface.read_tum_trajectory_file(str(out / "trajectory.txt"))
    assert traj.num_poses == 6
    np.testing.assert_allclose(traj.poses_se3[0], np.eye(4), atol=1e-5)
    # timestamps are the source's (stride 2 of a 30 fps sequence)
    np.testing.assert_allclose(np.diff(traj.timestamps), 2 / 30.0, atol=1e-4)
    # map: open3d reads the binary PLY with colours and confidence
    cloud = o3d.t.io.read_point_cloud(str(out / "map.ply"))
    assert len(cloud.point.positions) == summary["points"] > 0
    assert "confidence" in dict(cloud.point.items())
    # timing: one line per frame (model step latency, RSS)
    timing = np.loadtxt(out / "timing.txt", ndmin=2)
    assert timing.shape == (6, 4) and (timing[:, 1] > 0).all() and (timing[:, 3] > 0).all()
    # depth files, one per frame, at the model resolution
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"{i:06d}.npy" for i in range(0, 12, 2)]
    assert np.load(out / "depth" / "000000.npy").shape == (96, 128)
    # rerun: every per-frame entity has one row per frame on the frame timeline
    rows = _rrd_rows(rrd)
    for entity in ENTITIES:
        assert rows[entity] == 6, (entity, rows[entity])
    assert rows["/world/map"] >= 1 and rows["/world/trajectory/0000"] == 6  # the path so far, every frame
    # ground truth is in the folder: accuracy is reported, the pose beside its baselines
    assert {"depth", "pose"} <= set(summary["accuracy"])
    pose = summary["accuracy"]["pose"]
    keys = {"ate_rmse", "sim3_scale", "static_ate_rmse", "constant_velocity_ate_rmse", "ate_vs_static"}
    assert keys <= set(pose)
    gt = file_interface.read_tum_trajectory_file(str(synthetic_folder / "groundtruth.txt"))
    gt.reduce_to_ids(np.arange(0, 12, 2))  # the run's frames (stride 2)
    np.testing.assert_allclose(gt.timestamps, traj.timestamps, atol=1e-4)
    centres = gt.positions_xyz
    static = np.sqrt(((centres - centres.mean(0)) ** 2).sum(1).mean())  # closed form (Sim(3))
    assert pose["static_ate_rmse"] == pytest.approx(static, rel=1e-6)
    assert pose["ate_vs_static"] == pytest.approx(pose["ate_rmse"] / static, rel=1e-6)
    _, _, scale = traj.align(gt, correct_scale=True)  # evo's Umeyama on the same pairs
    assert pose["sim3_scale"] == pytest.approx(scale, rel=1e-4)
    printed = capsys.readouterr().out
    assert f"ATE {pose['ate_rmse']:.4f} m (Sim(3))" in printed
    cv = pose["constant_velocity_ate_rmse"]
    assert f"static camera {static:.4f} m, constant velocity {cv:.4f} m" in printed
    assert f"Sim(3) scale {pose['sim3_scale']:.4g}" in printed


def test_run_on_video_file_with_known_intrinsics(tmp_path, small_checkpoint, synthetic_folder):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(synthetic_folder / "video.mp4"),
            "--checkpoint",
            str(small_checkpoint),
            "--out",
            str(out),
            "--quiet",
            "--max-frames",
            "4",
            "--intrinsics",
            "100,100,63.5,47.5",
        ]
    )
    assert code == 0
    K = np.loadtxt(out / "intrinsics.txt")
    assert K.shape == (4, 6)
    np.testing.assert_allclose(K[:, 2:], [[100, 100, 63.5, 47.5]] * 4, atol=1e-4)  # used, not predicted
    assert json.loads((out / "summary.json").read_text())["accuracy"] == {}  # a video has no ground truth


def test_sigterm_keeps_valid_outputs_up_to_last_frame(tmp_path, small_checkpoint, synthetic_folder):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recon.cli",
            "run",
            str(synthetic_folder / "video.mp4"),
            "--checkpoint",
            str(small_checkpoint),
            "--out",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    traj = out / "trajectory.txt"
    deadline = time.time() + 120
    def poses_written() -> int:  # the file starts with a '#' header line
        lines = traj.read_text().splitlines() if traj.exists() else []
        return sum(1 for line in lines if not line.startswith("#"))

    while time.time() < deadline and poses_written() < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    if summary["frames"] == 12:  # the run finished before the signal arrived: nothing to check
        pytest.fail("the run ended before SIGTERM; lengthen the input")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert summary["status"] == "interrupted"
    poses = file_interface.read_tum_trajectory_file(str(traj))
    assert poses.num_poses == summary["frames"] >= 3
    assert len(np.loadtxt(out / "intrinsics.txt", ndmin=2)) == summary["frames"]
    assert len(o3d.t.io.read_point_cloud(str(out / "map.ply")).point.positions) == summary["points"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "/nonexistent/clip.mp4"], "no such file"),
        (["run", "{bad_file}"], "not a video"),
        (["run", "{folder}", "--checkpoint", "/nonexistent/ckpt"], "no such checkpoint"),
        (["run", "{folder}", "--intrinsics", "1,2,3"], "expected 4 values"),
        (["run", "{folder}", "--out", "/proc/forbidden"], "output directory"),
    ],
    ids=["missing-file", "not-a-video", "missing-checkpoint", "bad-intrinsics", "unwritable-out"],
)
def test_bad_input_is_a_clear_message(tmp_path, small_checkpoint, synthetic_folder, args, message, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    argv = [a.format(bad_file=bad, folder=synthetic_folder) for a in args]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(small_checkpoint)]
    argv += ["--quiet"] if "--out" in argv else ["--quiet", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("recon run: error:") and message in err.lower(), err


def test_console_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recon.cli", "run", str(tmp_path / "missing.mp4")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no such file" in proc.stderr.lower(), proc.stderr


def test_demo_generates_runs_and_reports_accuracy(tmp_path, small_checkpoint, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--checkpoint", str(small_checkpoint), "--out", str(out), "--frames", "8", "--quiet"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "ATE" in printed and "AbsRel" in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 8
    assert {"depth", "pose"} <= set(summary["accuracy"])
    pose = summary["accuracy"]["pose"]
    assert f"static camera {pose['static_ate_rmse']:.4f} m" in printed and "Sim(3) scale" in printed
    assert _rrd_rows(out / "demo.rrd")["/world/camera"] == 8
    # the synthetic video is generated once, deterministically, and reused
    (data,) = (out / "data").iterdir()
    assert (data / "video.mp4").is_file()
    assert (
        main(["demo", "--checkpoint", str(small_checkpoint), "--out", str(out), "--frames", "8", "--quiet"])
        == 0
    )
    assert json.loads((out / "demo_summary.json").read_text())["accuracy"] == summary["accuracy"]


def test_pose_line_with_baselines_and_when_the_trajectory_cannot_be_aligned():
    from recon.commands.run import pose_line

    full = {"ate_rmse": 0.12345, "rpe_trans_rmse": 0.01, "rpe_rot_rmse_deg": 1.5, "frames": 9,
            "sim3_scale": 0.8, "static_ate_rmse": 0.5, "constant_velocity_ate_rmse": 0.25,
            "ate_vs_static": 0.2469}
    assert pose_line(full) == (
        "pose vs ground truth: ATE 0.1235 m (Sim(3)), RPE 0.0100 m / 1.50 deg over 9 frames; static camera "
        "0.5000 m, constant velocity 0.2500 m, ATE / static 0.247, Sim(3) scale 0.8"
    )
    failed = {"error": "cannot align trajectories", "static_ate_rmse": 0.5,
              "constant_velocity_ate_rmse": 0.25}
    assert pose_line(failed) == ("pose vs ground truth: ATE not computed (cannot align trajectories); static "
                                 "camera 0.5000 m, constant velocity 0.2500 m")


def test_no_revisit_runs_the_odometry_alone(tmp_path, small_checkpoint, synthetic_folder):
    """--no-revisit reaches the model (no keyframe bank in its state) and the summary says so."""
    from recon.checkpoint import load_model

    for flag, expected in (([], True), (["--no-revisit"], False)):
        out = tmp_path / f"out{len(flag)}"
        code = main(["run", str(synthetic_folder), "--checkpoint", str(small_checkpoint), "--out", str(out),
                     "--quiet", "--max-frames", "2", *flag])
        assert code == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["settings"]["revisit"] is expected and summary["revisit_corrections"] == 0
    model = load_model(small_checkpoint)
    model.set_revisit(False)
    assert model.init_state(1).poses.keyframes.index.shape == (1, 0)
