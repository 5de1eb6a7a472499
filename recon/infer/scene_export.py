"""A finished run folder (``recon run --out``) as files other tools read: COLMAP text, glTF (GLB), PLY.

What is read (:func:`read_run`): trajectory.txt (TUM, cam2world, OpenCV camera, world = first
camera, model units), intrinsics.txt (``frame timestamp fx fy cx cy``, pixels at the model
resolution, pixel centres at integer coordinates), map.ply (xyz float32, rgb uint8, confidence
float32) and summary.json (status, ``settings.image_size`` = model (H, W)). An interrupted run is
exported up to its last finished frame and the notes say so; a folder that is not a run, a run
still being written, or a "complete" run with a file missing is refused (:class:`InputError`).

What is written:
- COLMAP text (:func:`write_colmap`): ``cameras.txt`` (PINHOLE at the model resolution: one camera
  when every frame has the same intrinsics, else one per frame; principal point moved by +0.5 px
  to COLMAP's convention, where the image's top-left corner is (0, 0) and the first pixel's centre
  is (0.5, 0.5)), ``images.txt`` (one line per frame, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID
  NAME``: the world-to-camera rotation as a scalar-first quaternion and translation, COLMAP's
  convention, then an empty POINTS2D line; NAME = ``frame_NNNNNN.png`` of the source frame index;
  with ``images`` the frames themselves, read again from the run's source and fitted as the run
  fitted them, go to ``images/NAME``) and ``points3D.txt`` (the map's points and colours, ERROR 0,
  no tracks).
- GLB (:func:`write_glb`, trimesh): nodes ``map`` (points with colours), ``cameras`` (a wire frustum
  per exported frame: apex at the camera centre, the image corners at ``frustum_depth``) and
  ``trajectory`` (the camera centres as line segments). glTF is y-up with the camera looking
  down -z, so every vertex is the world point with y and z negated (OpenCV -> glTF axes).
- PLY (:func:`write_ply`): the run's map.ply as it is.

Every output appears complete or not at all: it is written under a temporary name beside the
target and renamed into place (:func:`recon.files.atomic_write`, :func:`recon.files.atomic_folder`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.errors import InputError
from recon.files import atomic_folder, atomic_write
from recon.geometry import rotmat_to_quat_wxyz
from recon.infer.outputs import SUMMARY_NAME, read_summary
from recon.trajectory import read_tum

FORMATS = ("colmap", "gltf", "ply")
# OpenCV world (x right, y down, z forward) -> glTF (y up, camera looking down -z).
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])
_EXPECTED = "expected the --out folder of a finished `recon run`"


@dataclass
class RunRecord:
    """The valid contents of a run folder.

    Attributes:
        dir: the folder.
        status: the summary's status (``complete``, ``interrupted`` or ``failed``).
        frames: [N] source frame indices; timestamps: [N] seconds.
        cam2world: [N, 4, 4] float64, OpenCV camera, world = first camera, model units.
        K: [N, 3, 3] float64 pixels at the model resolution (pixel centres at integer coordinates).
        image_size: (H, W) of the model resolution.
        points: [M, 3] float32 world; colors: [M, 3] uint8; confidence: [M] float32.
        notes: what was left out or is incomplete (printed by the command).
    """

    dir: Path
    status: str
    frames: np.ndarray
    timestamps: np.ndarray
    cam2world: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]
    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    notes: list[str] = field(default_factory=list)


def _complete_lines(path: Path, notes: list[str]) -> str:
    """The file's text without a partial last line (a run killed while writing it)."""
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        notes.append(f"{path.name}: dropped a partial last line")
    return text


def _read_intrinsics(path: Path, notes: list[str]) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(_complete_lines(path, notes).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) != 6 or not np.isfinite(values).all():
            raise InputError(f"{path}:{lineno}: expected 'frame timestamp fx fy cx cy', got {line[:80]!r}")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def _read_tum_complete(path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    text = _complete_lines(path, notes)
    if not any(line.strip() and not line.startswith("#") for line in text.splitlines()):
        return np.zeros(0), np.zeros((0, 4, 4))
    with tempfile.TemporaryDirectory() as tmp:  # read_tum reads a file: give it the complete lines
        copy = Path(tmp) / path.name
        copy.write_text(text)
        try:
            return read_tum(copy)
        except InputError as e:
            raise InputError(str(e).replace(str(copy), str(path))) from None


_EMPTY_MAP = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32))


def _read_map(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import open3d as o3d

    cloud = o3d.t.io.read_point_cloud(str(path))
    items = dict(cloud.point.items())
    if "positions" not in items:
        head = path.read_bytes()[:400]
        if head.startswith(b"ply\n") and b"element vertex 0\n" in head:  # the empty map of an empty run
            return _EMPTY_MAP
        raise InputError(f"{path}: not a readable PLY point cloud ({_EXPECTED})")
    points = items["positions"].numpy().astype(np.float32)
    colors = items["colors"].numpy() if "colors" in items else np.full_like(points, 200, dtype=np.uint8)
    if colors.dtype != np.uint8:
        colors = np.clip(np.round(colors * 255.0), 0, 255).astype(np.uint8)
    conf = items["confidence"].numpy().reshape(-1).astype(np.float32) if "confidence" in items else (
        np.ones(len(points), np.float32))
    return points, colors, conf


def read_run(run_dir: str | Path) -> RunRecord:
    """Read the valid part of a run folder (see the module docstring); InputError for anything else."""
    d = Path(run_dir)
    if not d.is_dir():
        raise InputError(f"RUN_DIR {d}: no such folder ({_EXPECTED})")
    summary = read_summary(d)
    if summary is None:
        raise InputError(f"RUN_DIR {d}: not a run folder, no {SUMMARY_NAME} ({_EXPECTED})")
    status = summary.get("status")
    if status == "running":
        pid = (summary.get("process") or {}).get("pid")
        raise InputError(f"RUN_DIR {d}: the run is still writing it (pid {pid}); export it when it has "
                         "finished")
    if status not in ("complete", "interrupted", "failed"):
        raise InputError(f"RUN_DIR {d}: {SUMMARY_NAME} has status {status!r} ({_EXPECTED})")
    finished = status == "complete"
    notes: list[str] = []
    missing = [n for n in ("trajectory.txt", "intrinsics.txt") if not (d / n).is_file()]
    if not (d / "map.ply").is_file():
        if finished:
            missing.append("map.ply")
        else:
            notes.append("no map.ply yet: no points exported")
    if missing:
        raise InputError(f"RUN_DIR {d}: incomplete run, {', '.join(missing)} missing ({_EXPECTED})")
    timestamps, cam2world = _read_tum_complete(d / "trajectory.txt", notes)
    intr = _read_intrinsics(d / "intrinsics.txt", notes)
    n = min(len(timestamps), len(intr))
    if n != max(len(timestamps), len(intr)):
        if finished:
            raise InputError(f"RUN_DIR {d}: incomplete run, trajectory.txt has {len(timestamps)} poses and "
                             f"intrinsics.txt {len(intr)} frames ({_EXPECTED})")
        notes.append(f"trajectory.txt has {len(timestamps)} poses, intrinsics.txt {len(intr)} frames: "
                     f"exporting the first {n}")
    if n == 0:
        raise InputError(f"RUN_DIR {d}: holds no finished frame, nothing to export")
    timestamps, cam2world, intr = timestamps[:n], cam2world[:n], intr[:n]
    if np.abs(intr[:, 1] - timestamps).max() > 1e-5:
        raise InputError(f"RUN_DIR {d}: trajectory.txt and intrinsics.txt disagree on the frames' "
                         f"timestamps ({_EXPECTED})")
    size = (summary.get("settings") or {}).get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise InputError(f"RUN_DIR {d}: {SUMMARY_NAME} has no settings.image_size [H, W] ({_EXPECTED})")
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = intr[:, 2], intr[:, 3], intr[:, 4], intr[:, 5]
    K[:, 2, 2] = 1.0
    points, colors, conf = _read_map(d / "map.ply") if (d / "map.ply").is_file() else _EMPTY_MAP
    if not finished:
        notes.insert(0, f"the run's status is {status!r}: exporting its {n} finished frames")
    return RunRecord(d, status, intr[:, 0].astype(np.int64), timestamps, cam2world, K, (size[0], size[1]),
                     points, colors, conf, notes)


# -- COLMAP ---------------------------------------------------------------------------------------


def _colmap_cameras(run: RunRecord) -> tuple[list[str], np.ndarray]:
    """cameras.txt lines and each frame's CAMERA_ID."""
    h, w = run.image_size
    params = np.stack([run.K[:, 0, 0], run.K[:, 1, 1], run.K[:, 0, 2] + 0.5, run.K[:, 1, 2] + 0.5], 1)
    shared = bool(np.abs(params - params[0]).max() <= 1e-9)
    rows = params[:1] if shared else params
    lines = [f"{i + 1} PINHOLE {w} {h} " + " ".join(f"{v:.17g}" for v in p) for i, p in enumerate(rows)]
    ids = np.ones(len(run.K), np.int64) if shared else np.arange(1, len(run.K) + 1)
    return lines, ids


def colmap_world2cam(cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP's image pose from cam2world [N, 4, 4]: (quat_wxyz [N, 4] of R_world2cam, t_world2cam [N, 3]),
    so that x_cam = R x_world + t."""
    R = np.transpose(cam2world[:, :3, :3], (0, 2, 1))
    t = -np.einsum("nij,nj->ni", R, cam2world[:, :3, 3])
    return rotmat_to_quat_wxyz(torch.as_tensor(R)).numpy(), t


def source_images(run: RunRecord):
    """The run's frames as the model saw them: (name, RGB uint8 [H, W, 3]) per exported frame, read
    again from the run's source (``settings.source``) through the same fitting (resize policy,
    stride, model resolution). InputError when the source is gone, a webcam, or no longer matches."""
    from recon.infer.sources import FrameStream, WebcamSequence, open_source

    settings = (read_summary(run.dir) or {}).get("settings") or {}
    source_path = settings.get("source")
    if not source_path or not Path(source_path).exists():
        raise InputError(f"--images: the run's source {source_path!r} is not there any more (settings.source "
                         f"in {run.dir / SUMMARY_NAME}); export without --images")
    source = open_source(source_path, settings.get("format"))
    if isinstance(source, WebcamSequence):
        raise InputError("--images: the run read a webcam; its frames cannot be read again")
    stream = FrameStream(source, run.image_size, settings.get("resize", "crop"),
                         int(settings.get("stride", 1)))
    wanted = {int(f): k for k, f in enumerate(run.frames)}
    for frame in stream:
        k = wanted.pop(frame.index, None)
        if k is not None:
            if abs(frame.timestamp - run.timestamps[k]) > 1e-5:
                raise InputError(f"--images: {source_path} frame {frame.index} has timestamp "
                                 f"{frame.timestamp:.6f}, the run's {run.timestamps[k]:.6f}: not the source "
                                 "this run read")
            yield f"frame_{frame.index:06d}.png", frame.image
        if not wanted:
            return
    raise InputError(f"--images: {source_path} has no frame {min(wanted)} (the run's frames: "
                     f"{int(run.frames[0])}..{int(run.frames[-1])}): not the source this run read")


def write_colmap(run: RunRecord, out_dir: str | Path, overwrite: bool = False, images: bool = False) -> Path:
    """COLMAP text model (cameras.txt, images.txt, points3D.txt) in ``out_dir``; see the module
    docstring. ``images``: also ``images/frame_NNNNNN.png``, the frames at the model resolution
    (:func:`source_images`)."""
    h, w = run.image_size
    camera_lines, camera_ids = _colmap_cameras(run)
    quat_wxyz, t = colmap_world2cam(run.cam2world)

    def _write(tmp: Path) -> None:
        if images:
            import cv2

            (tmp / "images").mkdir()
            for name, rgb in source_images(run):
                if not cv2.imwrite(str(tmp / "images" / name), np.ascontiguousarray(rgb[..., ::-1])):
                    raise InputError(f"--out {out_dir}: could not write images/{name}")
        (tmp / "cameras.txt").write_text(
            "# Camera list with one line of data per camera:\n"
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
            f"# Number of cameras: {len(camera_lines)}\n"
            f"# streamrecon: PINHOLE fx fy cx cy at the model resolution {w}x{h} (the frames as the model "
            "saw them); cx, cy in COLMAP's convention (first pixel centre at 0.5, 0.5)\n"
            + "".join(line + "\n" for line in camera_lines))
        with open(tmp / "images.txt", "w") as f:
            f.write("# Image list with two lines of data per image:\n"
                    "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
                    "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
                    f"# Number of images: {len(t)}, mean observations per image: 0\n"
                    "# streamrecon: world-to-camera (x_cam = R x_world + t), world = the first camera, "
                    "model units; NAME = source frame index (images/NAME with --images)\n")
            for i in range(len(t)):
                pose = " ".join(f"{v:.17g}" for v in (*quat_wxyz[i], *t[i]))
                f.write(f"{i + 1} {pose} {camera_ids[i]} frame_{run.frames[i]:06d}.png\n\n")
        with open(tmp / "points3D.txt", "w") as f:
            f.write("# 3D point list with one line of data per point:\n"
                    "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                    f"# Number of points: {len(run.points)}, mean track length: 0\n")
            for i, (p, c) in enumerate(zip(run.points.astype(np.float64), run.colors, strict=True)):
                f.write(f"{i + 1} {p[0]:.9g} {p[1]:.9g} {p[2]:.9g} {c[0]} {c[1]} {c[2]} 0\n")

    out_dir = Path(out_dir)
    check_target(out_dir, overwrite, folder=True)
    with _writing(out_dir):
        atomic_folder(out_dir, _write)
    return out_dir


# -- glTF -----------------------------------------------------------------------------------------


def frustum_segments(cam2world: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                     depth: float) -> np.ndarray:
    """Wire frustums [N, 8, 2, 3] in the world (OpenCV): 4 edges from the camera centre to the image
    corners at z = ``depth`` (the image spans u in [-0.5, W - 0.5], v in [-0.5, H - 0.5]), then the
    4 edges of that rectangle."""
    h, w = image_size
    uv = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    x = (uv[None, :, 0] - K[:, None, 0, 2]) / K[:, None, 0, 0] * depth
    y = (uv[None, :, 1] - K[:, None, 1, 2]) / K[:, None, 1, 1] * depth
    corners_cam = np.stack([x, y, np.full_like(x, depth)], -1)  # [N, 4, 3]
    corners = np.einsum("nij,nkj->nki", cam2world[:, :3, :3], corners_cam) + cam2world[:, None, :3, 3]
    apex = np.broadcast_to(cam2world[:, None, :3, 3], corners.shape)
    rays = np.stack([apex, corners], 2)
    rim = np.stack([corners, np.roll(corners, -1, axis=1)], 2)
    return np.concatenate([rays, rim], 1)


def default_frustum_depth(run: RunRecord) -> float:
    """5% of the diagonal of the map and camera centres' bounding box (0.1 for a single point)."""
    xyz = np.concatenate([run.points.astype(np.float64), run.cam2world[:, :3, 3]])
    diag = float(np.linalg.norm(xyz.max(0) - xyz.min(0)))
    return 0.05 * diag if diag > 0 else 0.1


def write_glb(run: RunRecord, path: str | Path, frustum_depth: float | None = None, camera_every: int = 1,
              overwrite: bool = False) -> Path:
    """A GLB scene (trimesh): map points, camera frustums of every ``camera_every``-th frame, the
    trajectory; glTF axes (see the module docstring)."""
    import trimesh

    depth = default_frustum_depth(run) if frustum_depth is None else frustum_depth
    pick = np.arange(0, len(run.cam2world), camera_every)
    segments = frustum_segments(run.cam2world[pick], run.K[pick], run.image_size, depth)
    centres = run.cam2world[:, :3, 3]
    scene = trimesh.Scene()
    if len(run.points):
        rgba = np.concatenate([run.colors, np.full((len(run.colors), 1), 255, np.uint8)], 1)
        scene.add_geometry(trimesh.PointCloud(run.points.astype(np.float64) @ OPENCV_TO_GLTF, colors=rgba),
                           geom_name="map", node_name="map")
    scene.add_geometry(trimesh.load_path(segments.reshape(-1, 2, 3) @ OPENCV_TO_GLTF),
                       geom_name="cameras", node_name="cameras")
    if len(centres) > 1:
        steps = np.stack([centres[:-1], centres[1:]], 1)
        scene.add_geometry(trimesh.load_path(steps @ OPENCV_TO_GLTF), geom_name="trajectory",
                           node_name="trajectory")
    data = scene.export(file_type="glb")
    return _publish_file(path, lambda tmp: tmp.write_bytes(data), overwrite)


# -- PLY ------------------------------------------------------------------------------------------


def write_ply(run: RunRecord, path: str | Path, overwrite: bool = False) -> Path:
    """The run's map.ply, copied as it is (binary PLY: xyz float32, rgb uint8, confidence float32)."""
    source = run.dir / "map.ply"
    if not source.is_file():
        raise InputError(f"RUN_DIR {run.dir}: no map.ply to export yet")
    return _publish_file(path, lambda tmp: shutil.copyfile(source, tmp), overwrite)


def _publish_file(path: str | Path, write, overwrite: bool) -> Path:
    path = Path(path)
    check_target(path, overwrite, folder=False)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    return path


@contextlib.contextmanager
def _writing(path: Path, option: str = "--out"):
    """An OSError while writing ``path`` (a read-only or special file system) as an InputError."""
    try:
        yield
    except OSError as e:
        raise InputError(f"{option} {path}: cannot be written ({e.strerror or e})") from None


def check_target(path: Path, overwrite: bool, folder: bool, option: str = "--out") -> None:
    """InputError unless ``path`` (a file, or a ``folder``) can be written: the nearest existing
    folder above it is writable, and it does not exist yet unless ``overwrite`` (and then it is of
    the same kind)."""
    import os

    if path.exists():
        if not overwrite:
            raise InputError(f"{option} {path}: exists; pass --overwrite to replace it, or choose another "
                             f"{option}")
        if path.is_dir() != folder:
            raise InputError(f"{option} {path}: is {'a folder' if path.is_dir() else 'a file'}, expected "
                             f"{'a folder' if folder else 'a file'} to replace")
    parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot be written ({parent} is not a writable folder)")
