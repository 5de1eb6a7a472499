"""`recon export-scene`: the exports read back by independent readers (pycolmap for COLMAP text,
trimesh for GLB, open3d for PLY) and compared with the run's own files as evo and open3d read them
(TUM trajectory, intrinsics.txt, map.ply), to round-off; and the bad inputs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import open3d as o3d
import pycolmap
import pytest
import trimesh
from evo.tools import file_interface

from recon.cli import main
from tests.reliability.conftest import assert_user_error, run_cli, run_cli_out


def _run(tmp_path_factory, small_checkpoint, synthetic_folder, *extra):
    out = tmp_path_factory.mktemp("run") / "run"
    code = main(["run", str(synthetic_folder), "--checkpoint", str(small_checkpoint), "--out", str(out),
                 "--quiet", "--max-frames", "6", *extra])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_checkpoint, synthetic_folder):
    """A finished run whose intrinsics the model predicts (they differ frame to frame)."""
    return _run(tmp_path_factory, small_checkpoint, synthetic_folder)


@pytest.fixture(scope="module")
def known_K_run(tmp_path_factory, small_checkpoint, synthetic_folder):
    """A finished run with known intrinsics (one camera for every frame)."""
    return _run(tmp_path_factory, small_checkpoint, synthetic_folder, "--intrinsics", "100,100,63.5,47.5")


def _reference(run_dir):
    """The run's poses (evo), intrinsics (numpy) and map (open3d): the comparison reference."""
    traj = file_interface.read_tum_trajectory_file(str(run_dir / "trajectory.txt"))
    intr = np.loadtxt(run_dir / "intrinsics.txt", ndmin=2)
    cloud = o3d.t.io.read_point_cloud(str(run_dir / "map.ply"))
    return np.array(traj.poses_se3), intr, cloud.point.positions.numpy(), cloud.point.colors.numpy()


def test_colmap_poses_intrinsics_and_points_match_the_run(run_dir, tmp_path, capsys):
    out = tmp_path / "colmap"
    code, printed, _ = run_cli_out(["export-scene", run_dir, "--format", "colmap", "--out", out], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["cameras.txt", "images.txt", "points3D.txt"]
    assert "at the model resolution 128x96" in printed
    cam2world, intr, points, colors = _reference(run_dir)
    rec = pycolmap.Reconstruction()
    rec.read_text(str(out))
    assert rec.num_images() == len(cam2world) == 6 and rec.num_points3D() == len(points) > 0
    # images.txt: each frame written exactly once, in order, world-to-camera
    text = (out / "images.txt").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert [line.split()[-1] for line in lines] == [f"frame_{int(i):06d}.png" for i in intr[:, 0]]
    for k, image_id in enumerate(sorted(rec.images)):
        image = rec.images[image_id]
        world2cam = np.vstack([image.cam_from_world().matrix(), [0, 0, 0, 1]])
        np.testing.assert_allclose(world2cam, np.linalg.inv(cam2world[k]), atol=1e-9)
        np.testing.assert_allclose(image.projection_center(), cam2world[k][:3, 3], atol=1e-9)
        # PINHOLE at the model resolution; COLMAP's principal point is ours + 0.5 px
        camera = rec.cameras[image.camera_id]
        assert (camera.model.name, camera.width, camera.height) == ("PINHOLE", 128, 96)
        fx, fy, cx, cy = intr[k, 2:]
        np.testing.assert_allclose(camera.params, [fx, fy, cx + 0.5, cy + 0.5], atol=1e-9)
    assert rec.num_cameras() == 6  # predicted intrinsics differ per frame: one camera per frame
    ids = sorted(rec.points3D)
    xyz = np.array([rec.points3D[i].xyz for i in ids])
    rgb = np.array([rec.points3D[i].color for i in ids])
    np.testing.assert_allclose(xyz, points, rtol=1e-7, atol=1e-7)  # float32 written with 9 digits
    np.testing.assert_array_equal(rgb, colors)


def test_colmap_projects_a_map_point_where_the_run_saw_it(known_K_run, tmp_path, capsys):
    """One camera for known intrinsics, and COLMAP's pixel convention: a point straight ahead of the
    first camera's principal point (ours: 63.5, 47.5) projects to COLMAP's 64.0, 48.0."""
    out = tmp_path / "colmap"
    assert run_cli(["export-scene", known_K_run, "--format", "colmap", "--out", out], capsys)[0] == 0
    rec = pycolmap.Reconstruction()
    rec.read_text(str(out))
    assert rec.num_cameras() == 1
    first = rec.images[min(rec.images)]
    np.testing.assert_allclose(first.project_point(np.array([0.0, 0.0, 2.0])), [64.0, 48.0], atol=1e-9)


def test_colmap_images_are_the_frames_the_run_read(run_dir, synthetic_folder, tmp_path, capsys):
    """--images: images/NAME for every images.txt NAME; the synthetic sequence is at the model
    resolution (128x96), so the fitted frames are its rgb/ PNGs as the TUM list names them."""
    import cv2

    out = tmp_path / "colmap"
    assert run_cli(["export-scene", run_dir, "--format", "colmap", "--out", out, "--images"], capsys)[0] == 0
    rec = pycolmap.Reconstruction()
    rec.read_text(str(out))
    listed = [line.split() for line in (synthetic_folder / "rgb.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    names = [rec.images[i].name for i in sorted(rec.images)]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(names)
    for k, name in enumerate(names):
        exported = cv2.imread(str(out / "images" / name), cv2.IMREAD_UNCHANGED)
        original = cv2.imread(str(synthetic_folder / listed[k][1]), cv2.IMREAD_UNCHANGED)
        assert exported.shape == (96, 128, 3)
        np.testing.assert_array_equal(exported, original)


def test_colmap_images_of_a_source_that_is_gone_is_one_line(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["settings"]["source"] = str(tmp_path / "moved")
    (run / "summary.json").write_text(json.dumps(summary))
    argv = ["export-scene", run, "--format", "colmap", "--out", tmp_path / "c", "--images"]
    code, err = run_cli(argv, capsys)
    assert_user_error(code, err, "export-scene", "--images", tmp_path / "moved", "export without --images")
    assert not (tmp_path / "c").exists()


def test_glb_points_frustums_and_trajectory_match_the_run(run_dir, tmp_path, capsys):
    out = tmp_path / "scene.glb"
    code = run_cli(["export-scene", run_dir, "--format", "gltf", "--out", out, "--frustum-depth", "0.5"],
                   capsys)[0]
    assert code == 0
    cam2world, intr, points, colors = _reference(run_dir)
    scene = trimesh.load(out, file_type="glb")
    assert set(scene.geometry) == {"map", "cameras", "trajectory"}
    flip = np.array([1.0, -1.0, -1.0])  # OpenCV world -> glTF axes
    for name in scene.geometry:  # no node transforms: the vertices are the scene coordinates
        np.testing.assert_allclose(scene.graph.get(name)[0], np.eye(4))
    cloud = scene.geometry["map"]
    np.testing.assert_allclose(cloud.vertices, points * flip, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cloud.colors[:, :3], colors)
    # frustums, computed here from the run's poses and intrinsics: apex at the camera centre, the
    # image corners (-0.5 .. W - 0.5, -0.5 .. H - 0.5) unprojected to depth 0.5
    expected = []
    for k in range(len(cam2world)):
        fx, fy, cx, cy = intr[k, 2:]
        uv = np.array([[-0.5, -0.5], [127.5, -0.5], [127.5, 95.5], [-0.5, 95.5]])
        cam = np.c_[(uv[:, 0] - cx) / fx * 0.5, (uv[:, 1] - cy) / fy * 0.5, np.full(4, 0.5)]
        corners = (cam2world[k] @ np.c_[cam, np.ones(4)].T)[:3].T
        centre = cam2world[k][:3, 3]
        expected += [(centre, c) for c in corners] + [(corners[j], corners[(j + 1) % 4]) for j in range(4)]
    _assert_same_segments(scene.geometry["cameras"].vertices * flip, expected)
    steps = list(zip(cam2world[:-1, :3, 3], cam2world[1:, :3, 3], strict=True))
    _assert_same_segments(scene.geometry["trajectory"].vertices * flip, steps)


def _assert_same_segments(vertices: np.ndarray, expected: list, atol: float = 1e-6) -> None:
    """GL_LINES vertex pairs equal the expected segments, as a set of undirected segments."""
    got = vertices.reshape(-1, 2, 3)
    assert len(got) == len(expected)
    unused = list(range(len(got)))
    for a, b in expected:
        match = [i for i in unused
                 if min(np.abs(got[i] - [a, b]).max(), np.abs(got[i] - [b, a]).max()) < atol]
        assert match, (a, b)
        unused.remove(match[0])


def test_ply_is_the_run_map(run_dir, tmp_path, capsys):
    out = tmp_path / "map.ply"
    assert run_cli(["export-scene", run_dir, "--format", "ply", "--out", out], capsys)[0] == 0
    assert out.read_bytes() == (run_dir / "map.ply").read_bytes()
    assert len(o3d.t.io.read_point_cloud(str(out)).point.positions) == json.loads(
        (run_dir / "summary.json").read_text())["points"]


def test_default_target_is_beside_the_run_and_existing_targets_need_overwrite(run_dir, tmp_path, capsys):
    run = tmp_path / "myrun"
    shutil.copytree(run_dir, run)
    assert run_cli(["export-scene", run, "--format", "gltf"], capsys)[0] == 0
    target = tmp_path / "myrun.glb"
    assert target.is_file()
    before = target.read_bytes()
    code, err = run_cli(["export-scene", run, "--format", "gltf"], capsys)
    assert_user_error(code, err, "export-scene", target, "--overwrite")
    assert run_cli(["export-scene", run, "--format", "colmap"], capsys)[0] == 0
    assert run_cli(["export-scene", run, "--format", "colmap", "--overwrite"], capsys)[0] == 0
    # no temporary file or folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myrun", "myrun.glb", "myrun_colmap"]
    assert target.read_bytes() == before


def test_interrupted_run_exports_its_finished_frames_and_says_so(run_dir, tmp_path, capsys):
    run = tmp_path / "cut"
    shutil.copytree(run_dir, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted", "frames": 4}))
    traj = (run / "trajectory.txt").read_text().splitlines(keepends=True)
    (run / "trajectory.txt").write_text("".join(traj[:5]) + traj[5][:20])  # header + 4 poses + a partial line
    code, printed, err = run_cli_out(["export-scene", run, "--format", "colmap", "--out", tmp_path / "c"],
                                     capsys)
    assert code == 0
    assert "'interrupted': exporting its 4 finished frames" in err and "partial last line" in err
    assert "exporting its 4 finished frames" in printed
    rec = pycolmap.Reconstruction()
    rec.read_text(str(tmp_path / "c"))
    assert rec.num_images() == 4


@pytest.mark.parametrize("case", ["missing", "not-a-run", "running", "complete-without-map", "bad-format",
                                  "unwritable", "target-is-a-file"])
def test_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path, case, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    fmt, out = "colmap", tmp_path / "export"
    if case == "missing":
        run, expected = tmp_path / "nope", ["no such folder", "recon run"]
    elif case == "not-a-run":
        (run / "summary.json").unlink()
        expected = ["not a run folder", "summary.json"]
    elif case == "running":
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # this live process
        expected = ["still writing it"]
    elif case == "complete-without-map":
        (run / "map.ply").unlink()
        expected = ["incomplete run", "map.ply missing"]
    elif case == "bad-format":
        fmt, expected = "obj", ["--format", "'obj'"]
    elif case == "unwritable":
        if os.geteuid() == 0:
            out, expected = "/proc/forbidden/export", ["cannot be written"]
        else:
            ro = tmp_path / "ro"
            ro.mkdir(mode=0o500)
            out, expected = ro / "export", ["cannot be written"]
    else:
        out.write_text("a file")
        expected = [str(out), "is a file"]
    argv = ["export-scene", run, "--format", fmt, "--out", out]
    if case == "target-is-a-file":
        argv.append("--overwrite")
    code, err = run_cli(argv, capsys)
    assert_user_error(code, err, "export-scene", *expected)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("run", "ro"))
    assert leftovers == (["export"] if case == "target-is-a-file" else []), leftovers
