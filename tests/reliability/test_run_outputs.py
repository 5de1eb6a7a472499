"""`recon run` outputs that cannot mix, go stale or lie (issue 17, items 1-5, 7 and 9).

One run owns its output folder (a lock, a manifest), a rerun never keeps an earlier run's files, a
killed run's summary reads as "interrupted", options and intrinsics are checked before anything
runs, ground truth is optional for a reconstruction, and blank frames stay out of the map.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from evo.tools import file_interface

from recon.infer.outputs import MANIFEST_NAME, RunFolder, map_save_due, read_summary
from tests.reliability.conftest import assert_user_error, run_cli, run_cli_out, textured, write_frames

REPO = Path(__file__).resolve().parents[2]


def _run(source, out, ckpt, *extra) -> list[str]:
    return ["run", source, "--checkpoint", ckpt, "--out", out, "--quiet", *extra]


def _poses(out: Path) -> int:
    return file_interface.read_tum_trajectory_file(str(out / "trajectory.txt")).num_poses


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "recon.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len([ln for ln in path.read_text().splitlines() if not ln.startswith("#")]) >= n:
            return
        time.sleep(0.05)
    err = proc.communicate()[1][-2000:] if proc.poll() is not None else ""
    raise AssertionError(f"{path} never reached {n} lines: {err}")


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory) -> Path:
    """240 textured frames: long enough to be caught running."""
    return write_frames(tmp_path_factory.mktemp("long") / "clip", [textured(i % 24) for i in range(240)])


# -- 1. one run per folder ------------------------------------------------------------------------


def test_second_run_into_a_locked_folder_fails_at_once_naming_the_holder(
    tmp_path, small_checkpoint, image_folder, capsys
):
    out = tmp_path / "out"
    with RunFolder(out):
        t0 = time.time()
        code, err = run_cli(_run(image_folder, out, small_checkpoint), capsys)
        line = assert_user_error(code, err, "run", out, "in use by another run", f"pid {os.getpid()}")
        assert time.time() - t0 < 5.0, "refused only after loading the model"
    assert "--out" in line
    assert not (out / "summary.json").exists()


def test_concurrent_runs_one_wins_and_its_files_agree(tmp_path, small_checkpoint, long_folder, capsys):
    out = tmp_path / "out"
    proc = _spawn(_run(long_folder, out, small_checkpoint, "--max-frames", "80"))
    try:
        _wait_for_lines(out / "trajectory.txt", 2, proc)
        code, err = run_cli(_run(long_folder, out, small_checkpoint, "--max-frames", "5"), capsys)
        assert_user_error(code, err, "run", "in use by another run", f"pid {proc.pid}")
        _, perr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, perr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 80
    assert _poses(out) == 80 and len(np.loadtxt(out / "intrinsics.txt", ndmin=2)) == 80
    assert len(np.loadtxt(out / "timing.txt", ndmin=2)) == 80
    assert len(o3d.t.io.read_point_cloud(str(out / "map.ply")).point.positions) == summary["points"]


# -- 2. no stale files ----------------------------------------------------------------------------


def test_rerun_is_refused_then_overwrite_leaves_no_stale_files(
    tmp_path, small_checkpoint, image_folder, capsys
):
    out = tmp_path / "out"
    assert run_cli(_run(image_folder, out, small_checkpoint, "--save-depth"), capsys)[0] == 0
    assert len(list((out / "depth").iterdir())) == 8
    (out / "notes.txt").write_text("mine")  # not written by the tool: never deleted

    code, err = run_cli(_run(image_folder, out, small_checkpoint, "--max-frames", "3"), capsys)
    assert_user_error(code, err, "run", out, "earlier run", "status complete", "--overwrite")
    assert len(list((out / "depth").iterdir())) == 8  # refused: untouched

    args = _run(image_folder, out, small_checkpoint, "--max-frames", "3", "--overwrite")
    assert run_cli(args, capsys)[0] == 0
    assert not (out / "depth").exists() and not (out / "conf").exists()  # the earlier run's frames
    assert (out / "notes.txt").read_text() == "mine"
    assert _poses(out) == 3 and json.loads((out / "summary.json").read_text())["frames"] == 3
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert "trajectory.txt" in manifest["files"] and manifest["frame_dirs"] == []


def test_a_folder_not_written_by_recon_is_refused_even_with_overwrite(
    tmp_path, small_checkpoint, image_folder, capsys
):
    out = tmp_path / "theirs"
    (out / "depth").mkdir(parents=True)
    (out / "depth" / "000000.npy").write_bytes(b"someone else's")
    code, err = run_cli(_run(image_folder, out, small_checkpoint, "--overwrite"), capsys)
    assert_user_error(code, err, "run", out, "not written by recon run")
    assert (out / "depth" / "000000.npy").read_bytes() == b"someone else's"


def test_a_manifest_cannot_make_overwrite_delete_outside_the_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps(
        {"format": "streamrecon-run-manifest/1", "files": ["../victim.txt"], "frame_dirs": []}))
    (out / "summary.json").write_text("{}")
    with pytest.raises(Exception, match="not a path inside the folder"):
        with RunFolder(out, overwrite=True):
            pass
    assert victim.read_text() == "keep"


def test_a_failed_start_leaves_the_folder_reusable(tmp_path, image_folder, capsys):
    out = tmp_path / "out"
    code, err = run_cli(_run(image_folder, out, tmp_path / "no_ckpt"), capsys)
    assert_user_error(code, err, "run", "no_ckpt")
    with RunFolder(out):  # only bookkeeping was left: not "an earlier run"
        pass


# -- 3. float options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [("--voxel-size", "nan"), ("--voxel-size", "inf"), ("--voxel-size", "-1"), ("--voxel-size", "0"),
     ("--conf-quantile", "nan"), ("--conf-quantile", "1"), ("--conf-quantile", "-0.1"),
     ("--fov", "nan"), ("--fov", "inf"), ("--fov", "0"), ("--max-points", "0"), ("--stride", "0"),
     ("--threads", "0"), ("--max-frames", "-3"), ("--web-port", "70000")],
)
def test_out_of_range_options_exit_2_naming_the_option(tmp_path, image_folder, option, value, capsys):
    out = tmp_path / "out"
    code, err = run_cli(["run", image_folder, "--out", out, option, value], capsys)
    assert_user_error(code, err, "run", option, repr(value))
    assert not out.exists()


# -- 4. intrinsics --------------------------------------------------------------------------------


def test_intrinsics_file_whose_bottom_row_is_not_001_is_refused(
    tmp_path, small_checkpoint, image_folder, capsys
):
    path = tmp_path / "K.txt"
    path.write_text("100 0 63.5\n0 100 47.5\n0 0 2\n")
    code, err = run_cli(_run(image_folder, tmp_path / "out", small_checkpoint, "--intrinsics", path), capsys)
    assert_user_error(code, err, "run", path, "bottom row", "[0, 0, 1]")
    path.write_text("100 3 63.5\n0 100 47.5\n0 0 1\n")
    code, err = run_cli(_run(image_folder, tmp_path / "out", small_checkpoint, "--intrinsics", path), capsys)
    assert_user_error(code, err, "run", path, "skew")


def test_principal_point_far_outside_the_image_is_refused(tmp_path, small_checkpoint, image_folder, capsys):
    out = tmp_path / "out"
    args = _run(image_folder, out, small_checkpoint, "--intrinsics", "500,500,5000,-3000")
    code, err = run_cli(args, capsys)
    assert_user_error(code, err, "run", "--intrinsics", "principal point (5000, -3000)", "128x96")
    assert not (out / "summary.json").exists()


def test_intrinsics_source_on_a_plain_video_is_refused_unless_a_fov_is_given(
    tmp_path, small_checkpoint, synthetic_folder, capsys
):
    video = synthetic_folder / "video.mp4"
    code, err = run_cli(_run(video, tmp_path / "a", small_checkpoint, "--intrinsics", "source"), capsys)
    assert_user_error(code, err, "run", "--intrinsics source", video, "no calibrated intrinsics", "60 degree")
    args = _run(video, tmp_path / "b", small_checkpoint, "--intrinsics", "source", "--fov", "70",
                "--max-frames", "2")
    assert run_cli(args, capsys)[0] == 0
    settings = json.loads((tmp_path / "b" / "summary.json").read_text())["settings"]
    assert settings["intrinsics"] == "source (a 70 degree field-of-view guess, --fov)"


# -- 5. ground truth is optional for a run, checked by `data check` --------------------------------


def test_missing_groundtruth_is_a_data_check_problem_but_not_a_run_failure(
    tmp_path, small_checkpoint, synthetic_folder, capsys
):
    seq = tmp_path / "seq"
    shutil.copytree(synthetic_folder, seq)
    (seq / "groundtruth.txt").unlink()
    code, printed, err = run_cli_out(["data", "check", seq], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"problem      {seq / 'groundtruth.txt'}: missing" in printed
    assert "problems     none" not in printed
    assert run_cli(_run(seq, tmp_path / "out", small_checkpoint), capsys)[0] == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 12 and "pose" not in summary["accuracy"]


def test_a_broken_groundtruth_is_a_data_check_problem_and_a_run_warning(
    tmp_path, small_checkpoint, synthetic_folder, capsys
):
    seq = tmp_path / "seq"
    shutil.copytree(synthetic_folder, seq)
    (seq / "groundtruth.txt").write_text("0.0 1 2 not a pose\n")
    code, printed, err = run_cli_out(["data", "check", seq], capsys)
    assert code == 1 and f"problem      {seq / 'groundtruth.txt'}:1: expected 8 values" in printed
    assert "frames       12 (checked 12)" in printed  # the rest was still checked
    code, err = run_cli(_run(seq, tmp_path / "out", small_checkpoint), capsys)
    assert code == 0 and f"warning: {seq / 'groundtruth.txt'}:1: expected 8 values" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == 12 and "groundtruth.txt" in summary["settings"]["ground_truth_problems"][0]


def test_a_truncated_ground_truth_depth_is_warned_and_counted_during_run(
    tmp_path, small_checkpoint, synthetic_folder, capsys
):
    seq = tmp_path / "seq"
    shutil.copytree(synthetic_folder, seq)
    depth = sorted((seq / "depth").iterdir())[5]
    depth.write_bytes(depth.read_bytes()[:60])
    code, printed, _ = run_cli_out(["data", "check", seq], capsys)
    assert code == 1 and f"problem      frame 5: {depth}" in printed
    code, err = run_cli(_run(seq, tmp_path / "out", small_checkpoint), capsys)
    assert code == 0, err
    assert "warning: frame 5: ground truth not usable" in err and depth.name in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 12 and _poses(tmp_path / "out") == 12
    assert summary["ground_truth_failures"] == 1
    assert {"depth", "pose"} <= set(summary["accuracy"])  # the other frames are still scored


# -- 7. a kill leaves a summary that reads as interrupted, and a map -------------------------------


def test_map_is_saved_from_the_first_frame_on_a_growing_schedule():
    due = [n for n in range(1, 160) if map_save_due(n, 50)]
    assert due == [1, 2, 4, 8, 16, 32, 50, 100, 150]


def test_sigkill_leaves_a_summary_that_reads_interrupted_and_a_valid_map(
    tmp_path, small_checkpoint, long_folder, capsys
):
    out = tmp_path / "out"
    proc = _spawn(_run(long_folder, out, small_checkpoint, "--save-depth"))
    try:
        _wait_for_lines(out / "trajectory.txt", 5, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["status"] == "running"  # nobody could say otherwise...
    summary = read_summary(out)
    assert summary["status"] == "interrupted" and "gone" in summary["status_note"]  # ...but it reads so
    assert 1 <= summary["frames"] <= _poses(out) < 240
    assert 1 <= summary["map_frames"] <= summary["frames"]
    cloud = o3d.t.io.read_point_cloud(str(out / "map.ply"))
    assert len(cloud.point.positions) > 0

    code, err = run_cli(_run(long_folder, out, small_checkpoint, "--max-frames", "2"), capsys)
    assert_user_error(code, err, "run", "status interrupted")
    args = _run(long_folder, out, small_checkpoint, "--max-frames", "2", "--overwrite")
    assert run_cli(args, capsys)[0] == 0
    assert not (out / "depth").exists() and _poses(out) == 2
    assert read_summary(out)["status"] == "complete"


def test_summary_is_rewritten_while_frames_finish(tmp_path, small_checkpoint, image_folder):
    """In-process: every frame that rewrites the map also rewrites the summary."""
    from recon.checkpoint import load_model
    from recon.infer.frames import SourceFrame
    from recon.infer.outputs import RunOutputs
    from recon.infer.pointmap import StreamingPointMap
    from recon.infer.runner import StreamRunner

    model = load_model(small_checkpoint)
    seen = []

    class Outputs(RunOutputs):
        def write_summary(self, summary):
            seen.append((summary["status"], summary["frames"], summary["map_frames"]))
            super().write_summary(summary)

    outputs = Outputs(tmp_path / "out", StreamingPointMap())
    frames = [SourceFrame(i, i / 30, textured(i)) for i in range(5)]
    StreamRunner(model, outputs, summary_every_s=1e9).run(frames)
    assert seen == [("running", 0, 0), ("running", 1, 1), ("running", 2, 2), ("running", 4, 4),
                    ("complete", 5, 5)]


# -- 9. blank frames -------------------------------------------------------------------------------


def test_blank_frames_are_counted_warned_and_kept_out_of_the_map(tmp_path, small_checkpoint, capsys):
    textured_only = write_frames(tmp_path / "a", [textured(i) for i in range(4)])
    black = np.zeros((96, 128, 3), np.uint8)
    mixed = write_frames(tmp_path / "b", [textured(i) for i in range(4)] + [black] * 6)
    assert run_cli(_run(textured_only, tmp_path / "oa", small_checkpoint), capsys)[0] == 0
    code, err = run_cli(_run(mixed, tmp_path / "ob", small_checkpoint), capsys)
    assert code == 0
    assert "warning: frame 4: no usable texture" in err and "kept out of the map" in err
    a, b = (json.loads((tmp_path / o / "summary.json").read_text()) for o in ("oa", "ob"))
    assert b["blank_frames"] == 6 and b["frames"] == 10 and _poses(tmp_path / "ob") == 10
    assert b["points"] == a["points"] > 0  # the black frames added nothing
    pa, pb = (np.asarray(o3d.t.io.read_point_cloud(str(tmp_path / o / "map.ply")).point.positions.numpy())
              for o in ("oa", "ob"))
    np.testing.assert_allclose(np.sort(pa, axis=0), np.sort(pb, axis=0))


def test_all_black_video_gives_an_empty_map_not_a_made_up_one(tmp_path, small_checkpoint, capsys):
    black = write_frames(tmp_path / "black", [np.zeros((96, 128, 3), np.uint8)] * 12)
    code, err = run_cli(_run(black, tmp_path / "out", small_checkpoint), capsys)
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["blank_frames"] == 12 and summary["points"] == 0
    assert err.count("no usable texture") == 3  # the first three, then every 100th: no flood
