"""ScanNet reader (the SensReader export).

Layout: ``<scene>/color/<i>.jpg``, ``depth/<i>.png`` (uint16 millimetres, 0 invalid),
``pose/<i>.txt`` (4x4 cam2world, OpenCV camera, metres), ``intrinsic/intrinsic_{color,depth}.txt``
(4x4, the top-left 3x3 is K in pixels). Frame names are integers, sorted numerically.

ScanNet marks failed tracking with ``-inf`` poses: such frames are skipped, counted in
``meta["skipped_invalid_pose"]`` and reported with a warning. Colour (1296x968) and depth (640x480)
differ in size: the colour image is resized (area filter) to the depth size and frames carry the
depth intrinsics, so image, depth and K agree. Without ``depth/`` the colour intrinsics are used.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from data.readers.imageio import (
    ground_truth,
    image_size,
    read_depth_png,
    read_matrix,
    read_rgb,
    require_dir,
    require_file,
)
from data.readers.poses import check_pose
from data.schema import Frame, Sequence
from recon.errors import InputError

FORMAT = "scannet"
DESCRIPTION = "ScanNet (SensReader export): color/<i>.jpg depth/<i>.png pose/<i>.txt intrinsic/"
DEPTH_SCALE = 1e-3
FPS = 30.0


def detect(root: Path) -> bool:
    return (root / "color").is_dir() and (root / "pose").is_dir() and (root / "intrinsic").is_dir()


def _numbered(folder: Path, suffixes: tuple[str, ...]) -> dict[int, Path]:
    out = {}
    for p in folder.iterdir():
        if p.suffix.lower() in suffixes and p.stem.isdigit():
            out[int(p.stem)] = p
    return out


def _read_K(path: Path) -> np.ndarray:
    M = read_matrix(require_file(path, "a 4x4 ScanNet intrinsic matrix"), (4, 4), "a 4x4 intrinsic matrix")
    K = M[:3, :3].copy()
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{path}: expected positive focal lengths, got {K.tolist()}")
    return K


def load(root: Path) -> Sequence:
    """Read one ScanNet scene export.

    Returns:
        Sequence with image resized to the depth size, depth float32 metres (0 invalid),
        K of the depth camera, cam2world (OpenCV); frames with non-finite poses skipped.
    """
    colors = _numbered(require_dir(root / "color", "ScanNet color/<i>.jpg images"), (".jpg", ".jpeg", ".png"))
    poses_dir = require_dir(root / "pose", "ScanNet pose/<i>.txt files")
    if not colors:
        raise InputError(f"{root / 'color'}: no <integer>.jpg images (expected the SensReader export)")
    has_depth = (root / "depth").is_dir()
    depths = _numbered(root / "depth", (".png",)) if has_depth else {}
    ids = sorted(colors)
    meta: dict = {"depth_scale": DEPTH_SCALE}

    keep, poses, skipped = [], [], []
    for i in ids:
        pose_path = poses_dir / f"{i}.txt"
        T = read_matrix(require_file(pose_path, "a 4x4 cam2world matrix"), (4, 4), "a 4x4 cam2world matrix")
        if not np.isfinite(T).all():
            skipped.append(i)
            continue
        if has_depth and i not in depths:
            raise InputError(f"{root / 'depth' / f'{i}.png'}: missing file (expected the depth of frame {i})")
        keep.append(i)
        poses.append(check_pose(T, str(pose_path)))
    meta["skipped_invalid_pose"] = len(skipped)
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} frames with non-finite (-inf) poses, first {skipped[0]}",
            stacklevel=2,
        )
    if not keep:
        raise InputError(f"{poses_dir}: every pose is non-finite; no usable frames")

    resize_to = None
    if has_depth:
        K = _read_K(root / "intrinsic" / "intrinsic_depth.txt")
        depth_size = image_size(depths[keep[0]])
        if image_size(colors[keep[0]]) != depth_size:
            resize_to = depth_size
            meta["color_resized_to_depth"] = list(depth_size)
    else:
        K = _read_K(root / "intrinsic" / "intrinsic_color.txt")

    def load_frame(i: int) -> Frame:
        idx = keep[i]
        image = read_rgb(colors[idx])
        if resize_to is not None:
            image = cv2.resize(image, resize_to, interpolation=cv2.INTER_AREA)
        depth = ground_truth(read_depth_png, depths[idx], DEPTH_SCALE) if has_depth else None
        if depth is not None and depth.shape != image.shape[:2]:
            raise InputError(
                f"{depths[idx]}: depth is {depth.shape[1]}x{depth.shape[0]}, expected "
                f"{image.shape[1]}x{image.shape[0]} like the other depth images"
            )
        return Frame(image=image, K=K.copy(), timestamp=idx / FPS, depth=depth, cam2world=poses[i].copy())

    meta["frame_ids"] = keep
    return Sequence(
        name=root.resolve().name,
        format=FORMAT,
        root=str(root),
        num_frames=len(keep),
        load=load_frame,
        meta=meta,
    )
