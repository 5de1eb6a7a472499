"""KITTI readers: the depth benchmark (``kitti_depth``) and odometry poses (``kitti_odometry``).

``kitti_depth``: a raw drive folder merged with its annotated depth, as the depth benchmark's
devkit expects::

    <date>/calib_cam_to_cam.txt                      (or inside the drive folder)
    <date>/<drive>_sync/image_02/data/0000000005.png  raw rectified colour images
    <date>/<drive>_sync/proj_depth/groundtruth/image_02/0000000005.png   uint16, metres = v / 256

Frames are those with ground-truth depth (0 = no LiDAR point); K = ``P_rect_02[:, :3]``. Poses are
not part of the benchmark (``cam2world=None``).

``kitti_odometry``: ``sequences/XX/{image_2/*.png, calib.txt, times.txt}`` and
``poses/XX.txt`` (12 floats a line: 3x4 cam2world of the rectified camera 0, OpenCV axes, world =
camera 0 at frame 0). The pose of camera c is ``cam2world_0 @ [I | -t_c]`` with
``t_c = K_c^-1 P_c[:, 3]`` (rectified cameras differ by a translation only). No depth.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from data.readers.imageio import (
    ground_truth,
    list_images,
    parse_floats,
    read_depth_png,
    read_rgb,
    read_table,
    require_dir,
    require_file,
)
from data.readers.poses import check_pose, rigid_from_3x4
from data.schema import Frame, Sequence
from recon.errors import ConfigError, InputError

FORMATS = ("kitti_depth", "kitti_odometry")
FORMAT = FORMATS[0]
DESCRIPTIONS = {
    "kitti_depth": "KITTI depth benchmark: <drive>/proj_depth/groundtruth/image_02/*.png (uint16 / 256), "
    "image_02/data/, calib_cam_to_cam.txt",
    "kitti_odometry": "KITTI odometry: sequences/XX/{image_2/, calib.txt, times.txt}, poses/XX.txt",
}
DEPTH_SCALE = 1.0 / 256.0


def detect_format(root: Path) -> str | None:
    if (root / "proj_depth" / "groundtruth").is_dir():
        return "kitti_depth"
    if (root / "calib.txt").is_file() and (root / "times.txt").is_file():
        return "kitti_odometry"
    return None


def detect(root: Path) -> bool:
    return detect_format(root) is not None


def read_calib(path: Path, n: int = 12) -> dict[str, np.ndarray]:
    """A KITTI calibration file ("KEY: v1 v2 ...") -> {key: float64 values} for keys with n values."""
    out = {}
    for lineno, line in enumerate(require_file(path, "a KITTI calibration file").read_text().splitlines(), 1):
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) != n:
            continue
        out[key.strip()] = parse_floats(fields, path, lineno, f"{n} calibration values")
    return out


def _projection(calib: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    if key not in calib:
        raise InputError(f"{path}: no '{key}:' line with 12 values (expected a 3x4 projection matrix)")
    P = calib[key].reshape(3, 4)
    if not np.isfinite(P).all() or P[0, 0] <= 0 or P[1, 1] <= 0:
        raise InputError(f"{path}: {key} is not a valid projection matrix: {P.tolist()}")
    return P


def _raw_timestamps(path: Path, n_images: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
    if len(lines) != n_images:
        raise InputError(f"{path}: {len(lines)} timestamps for {n_images} images (expected one per image)")
    try:
        stamps = [datetime.strptime(x[:26], "%Y-%m-%d %H:%M:%S.%f") for x in lines]
    except ValueError as e:
        raise InputError(f"{path}: expected 'YYYY-MM-DD HH:MM:SS.fffffffff' lines ({e})") from e
    return np.array([(s - stamps[0]).total_seconds() for s in stamps])


def load_kitti_depth(root: Path, camera: str = "image_02") -> Sequence:
    """Read one drive of the KITTI depth benchmark (merged with its raw images).

    Args:
        root: the ``<drive>_sync`` folder holding ``proj_depth/``.
        camera: ``"image_02"`` (left colour) or ``"image_03"`` (right colour).

    Returns:
        Sequence with sparse depth float32 metres (0 invalid), K pixels, cam2world None.
    """
    if camera not in ("image_02", "image_03"):
        raise ConfigError(f"kitti_depth camera: expected 'image_02' or 'image_03', got {camera!r}")
    depth_dir = require_dir(root / "proj_depth" / "groundtruth" / camera, f"KITTI {camera} depth PNGs")
    depths = list_images(depth_dir, (".png",))
    image_dir = require_dir(
        root / camera / "data",
        f"the raw KITTI {camera}/data images of this drive (merge the raw drive folder)",
    )
    calib_path = next(
        (
            p
            for p in (root / "calib_cam_to_cam.txt", root.resolve().parent / "calib_cam_to_cam.txt")
            if p.is_file()
        ),
        None,
    )
    if calib_path is None:
        raise InputError(
            f"{root}: missing calib_cam_to_cam.txt (expected in the drive folder or its date folder)"
        )
    P = _projection(read_calib(calib_path), f"P_rect_{camera[-2:]}", calib_path)
    K = P[:, :3].copy()
    all_images = list_images(image_dir, (".png",))
    times = _raw_timestamps(root / camera / "timestamps.txt", len(all_images))
    index = {p.stem: i for i, p in enumerate(all_images)}
    for d in depths:
        if d.stem not in index:
            raise InputError(f"{image_dir / d.name}: missing file (expected the image of depth {d})")

    def load_frame(i: int) -> Frame:
        j = index[depths[i].stem]
        return Frame(
            image=read_rgb(all_images[j]),
            K=K.copy(),
            timestamp=float(times[j]) if times is not None else j / 10.0,
            depth=ground_truth(read_depth_png, depths[i], DEPTH_SCALE),
            cam2world=None,
        )

    return Sequence(
        name=root.resolve().name,
        format="kitti_depth",
        root=str(root),
        num_frames=len(depths),
        load=load_frame,
        meta={"depth_scale": DEPTH_SCALE, "camera": camera, "poses": "none"},
    )


def read_kitti_poses(path: Path) -> np.ndarray:
    """A KITTI odometry pose file (12 floats per line, 3x4 cam2world) -> [N, 4, 4] float64."""
    rows = read_table(path, 12, "12 floats (a 3x4 cam2world matrix) per line")
    poses = np.empty((len(rows), 4, 4))
    for i, r in enumerate(rows):
        T = rigid_from_3x4(parse_floats(r[:12], path, f"pose {i}", "12 floats").reshape(3, 4))
        poses[i] = check_pose(T, f"{path} (pose {i})")
    return poses


def load_kitti_odometry(root: Path, camera: str = "image_2") -> Sequence:
    """Read one KITTI odometry sequence (``sequences/XX``).

    Args:
        root: the ``sequences/XX`` folder.
        camera: ``image_0``/``image_1`` (grey, left/right) or ``image_2``/``image_3`` (colour).

    Returns:
        Sequence with depth None, K pixels, cam2world of that camera (OpenCV, world = camera 0 at
        frame 0) from ``poses/XX.txt`` when it exists, else None.
    """
    if camera not in ("image_0", "image_1", "image_2", "image_3"):
        raise ConfigError(f"kitti_odometry camera: expected image_0..image_3, got {camera!r}")
    images = list_images(require_dir(root / camera, f"KITTI odometry {camera} images"), (".png",))
    calib_path = root / "calib.txt"
    P = _projection(read_calib(calib_path), f"P{camera[-1]}", calib_path)
    K = P[:, :3].copy()
    t_c = np.linalg.solve(K, P[:, 3])  # camera 0 -> camera c: X_c = X_0 + t_c
    cam_to_cam0 = np.eye(4)
    cam_to_cam0[:3, 3] = -t_c
    times_rows = read_table(root / "times.txt", 1, "one timestamp (seconds) per line")
    times = np.array(
        [parse_floats(r[:1], root / "times.txt", i, "a timestamp")[0] for i, r in enumerate(times_rows)]
    )
    if len(times) != len(images):
        raise InputError(
            f"{root / 'times.txt'}: {len(times)} timestamps for {len(images)} images in {camera}/"
        )
    pose_path = root.resolve().parent.parent / "poses" / f"{root.resolve().name}.txt"
    poses = None
    if pose_path.is_file():
        poses = read_kitti_poses(pose_path) @ cam_to_cam0
        if len(poses) != len(images):
            raise InputError(f"{pose_path}: {len(poses)} poses for {len(images)} images in {root / camera}")

    def load_frame(i: int) -> Frame:
        return Frame(
            image=read_rgb(images[i]),
            K=K.copy(),
            timestamp=float(times[i]),
            depth=None,
            cam2world=None if poses is None else poses[i].copy(),
        )

    meta = {
        "camera": camera,
        "poses": str(pose_path) if poses is not None else "none",
        "camera_offset_from_cam0": t_c.tolist(),
    }
    return Sequence(
        name=root.resolve().name,
        format="kitti_odometry",
        root=str(root),
        num_frames=len(images),
        load=load_frame,
        meta=meta,
    )


def load(root: Path, **options) -> Sequence:
    """Detect depth-benchmark vs odometry layout and read it."""
    kind = detect_format(root)
    if kind == "kitti_odometry":
        return load_kitti_odometry(root, **options)
    return load_kitti_depth(root, **options)
