"""TartanAir reader (one trajectory folder, left camera).

Layout: ``<env>/<Easy|Hard>/P000/image_left/000000_left.png``, ``depth_left/000000_left_depth.npy``
(float32 z-depth, metres), ``pose_left.txt`` (one line per frame: ``tx ty tz qx qy qz qw``, the
camera body pose in the NED world; body axes x forward, y right, z down). Intrinsics are fixed:
fx = fy = 320, cx = 320, cy = 240 for 640x480 images.

Conversion to OpenCV (done once, here): the world stays TartanAir's NED world; the camera axes are
re-expressed: an OpenCV direction (x right, y down, z forward) is the body direction
``R_body_from_cv @ d`` with ``R_body_from_cv = [[0,0,1],[1,0,0],[0,1,0]]``, so
``cam2world_cv = cam2world_ned_body @ [R_body_from_cv | 0]``. Timestamps: index / 10 (fps assumed
by the benchmark tools; ``meta["timestamps"]`` says so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.readers.imageio import (
    ground_truth,
    image_size,
    intrinsics_option,
    list_images,
    parse_floats,
    pinhole_K,
    read_rgb,
    read_table,
    require_dir,
    require_file,
)
from data.readers.poses import pose_from_quat_xyzw
from data.schema import Frame, Sequence
from recon.errors import InputError

FORMAT = "tartanair"
DESCRIPTION = "TartanAir: image_left/*_left.png, depth_left/*_left_depth.npy, pose_left.txt (NED)"
INTRINSICS = (320.0, 320.0, 320.0, 240.0)
KNOWN_SIZE = (640, 480)
FPS = 10.0
# Columns: OpenCV x (right), y (down), z (forward) expressed in NED body axes (x fwd, y right, z down).
R_BODY_FROM_CV = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def detect(root: Path) -> bool:
    return (root / "pose_left.txt").is_file() and (root / "image_left").is_dir()


def ned_body_to_opencv(cam2world_ned: np.ndarray) -> np.ndarray:
    """[4, 4] NED-body cam2world -> OpenCV-camera cam2world (same NED world)."""
    cv_to_body = np.eye(4)
    cv_to_body[:3, :3] = R_BODY_FROM_CV
    return cam2world_ned @ cv_to_body


def _read_npy_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    require_file(path, "a TartanAir float32 .npy depth map")
    try:
        depth = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: unreadable or truncated .npy depth ({e})") from e
    if depth.shape != shape or depth.dtype.kind != "f":
        raise InputError(f"{path}: expected float depth of shape {shape}, got {depth.dtype} {depth.shape}")
    depth = depth.astype(np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))


def load(root: Path, K: np.ndarray | None = None) -> Sequence:
    """Read one TartanAir trajectory folder (``P000``...).

    Returns:
        Sequence with depth float32 metres, K pixels, cam2world (OpenCV camera, NED world).
    """
    images = list_images(require_dir(root / "image_left", "TartanAir *_left.png images"), (".png",))
    pose_path = root / "pose_left.txt"
    rows = read_table(pose_path, 7, "'tx ty tz qx qy qz qw' lines")
    if len(rows) != len(images):
        raise InputError(f"{pose_path}: {len(rows)} poses for {len(images)} images in {root / 'image_left'}")
    poses = []
    for i, r in enumerate(rows):
        v = parse_floats(r[:7], pose_path, f"pose {i}", "tx ty tz qx qy qz qw")
        # File order tx ty tz qx qy qz qw (quaternion xyzw), NED body cam2world -> OpenCV.
        poses.append(ned_body_to_opencv(pose_from_quat_xyzw(v[:3], v[3:7], f"{pose_path} (pose {i})")))
    meta: dict = {"timestamps": f"frame index / {FPS:g} fps", "world": "TartanAir NED"}
    if K is None:
        size = image_size(images[0])
        if size != KNOWN_SIZE:
            raise InputError(
                f"{images[0]}: TartanAir images are 640x480, this one is {size[0]}x{size[1]}; "
                "pass K for resized copies"
            )
        K = pinhole_K(*INTRINSICS)
        meta["intrinsics_source"] = "published TartanAir intrinsics"
    else:
        K = intrinsics_option(K)
        meta["intrinsics_source"] = "K option"
    depth_dir = root / "depth_left"

    def load_frame(i: int) -> Frame:
        image = read_rgb(images[i])
        depth = None
        if depth_dir.is_dir():
            name = images[i].name.replace("_left.png", "_left_depth.npy")
            depth = ground_truth(_read_npy_depth, depth_dir / name, image.shape[:2])
        return Frame(image=image, K=K.copy(), timestamp=i / FPS, depth=depth, cam2world=poses[i].copy())

    return Sequence(
        name=root.resolve().name,
        format=FORMAT,
        root=str(root),
        num_frames=len(images),
        load=load_frame,
        meta=meta,
    )
