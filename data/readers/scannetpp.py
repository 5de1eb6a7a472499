"""ScanNet++ reader (COLMAP text models of the DSLR and iPhone captures).

Layout: ``<scene>/iphone/{rgb/frame_000000.jpg, depth/frame_000000.png, colmap/}`` (depth uint16
millimetres, 256x192) and ``<scene>/dslr/{resized_images/*.JPG, colmap/}`` (fisheye, no depth).
``colmap/cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``; ``colmap/images.txt``: two lines
per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then the (possibly empty) 2D points.

Conversions, done once here:

- ``images.txt`` holds world2cam with quaternion (w, x, y, z); COLMAP's camera axes are OpenCV's;
  the reader inverts it into cam2world.
- COLMAP puts the centre of the top-left pixel at (0.5, 0.5); OpenCV (our convention) at (0, 0):
  ``cx_cv = cx_colmap - 0.5`` (same for cy).
- Distorted models (SIMPLE_RADIAL, RADIAL, OPENCV, OPENCV_FISHEYE) are undistorted with OpenCV to
  a pinhole camera with the same fx, fy, cx, cy (``meta["undistorted_from"]`` names the model).
- With depth (iPhone), the colour image is resized to the depth size first and K scaled
  (``c' = (c + 0.5) s - 0.5``), then both are undistorted (depth with nearest neighbour).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from data.readers.imageio import (
    ground_truth,
    image_size,
    natural_key,
    parse_floats,
    pinhole_K,
    read_depth_png,
    read_rgb,
    require_dir,
    require_file,
)
from data.readers.poses import invert_rigid, pose_from_quat_wxyz
from data.schema import Frame, Sequence
from recon.errors import ConfigError, InputError
from recon.geometry import resize_intrinsics

FORMAT = "scannetpp"
DESCRIPTION = "ScanNet++ / COLMAP text: {iphone,dslr}/colmap/{cameras,images}.txt + rgb/ or resized_images/"
DEPTH_SCALE = 1e-3
IMAGE_DIRS = ("rgb", "resized_images", "images")
# Model -> (fx, fy, cx, cy, distortion coefficients, fisheye) from COLMAP's parameter list.
MODELS = {
    "SIMPLE_PINHOLE": lambda p: (p[0], p[0], p[1], p[2], [], False),
    "PINHOLE": lambda p: (p[0], p[1], p[2], p[3], [], False),
    "SIMPLE_RADIAL": lambda p: (p[0], p[0], p[1], p[2], [p[3], 0.0, 0.0, 0.0], False),
    "RADIAL": lambda p: (p[0], p[0], p[1], p[2], [p[3], p[4], 0.0, 0.0], False),
    "OPENCV": lambda p: (p[0], p[1], p[2], p[3], list(p[4:8]), False),
    "OPENCV_FISHEYE": lambda p: (p[0], p[1], p[2], p[3], list(p[4:8]), True),
}
NUM_PARAMS = {
    "SIMPLE_PINHOLE": 3,
    "PINHOLE": 4,
    "SIMPLE_RADIAL": 4,
    "RADIAL": 5,
    "OPENCV": 8,
    "OPENCV_FISHEYE": 8,
}


def _model_dir(root: Path, device: str | None) -> Path | None:
    if (root / "colmap" / "images.txt").is_file():
        return root
    for d in (device,) if device else ("iphone", "dslr"):
        if (root / d / "colmap" / "images.txt").is_file():
            return root / d
    return None


def detect(root: Path) -> bool:
    return _model_dir(root, None) is not None


def read_cameras_txt(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    """COLMAP cameras.txt -> {camera_id: (model, width, height, params)}."""
    out = {}
    for lineno, line in enumerate(require_file(path, "COLMAP cameras.txt").read_text().splitlines(), 1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        if len(f) < 5 or f[1] not in NUM_PARAMS or len(f) != 4 + NUM_PARAMS[f[1]]:
            raise InputError(
                f"{path}:{lineno}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS' with MODEL one of "
                f"{sorted(NUM_PARAMS)} and its parameter count, got {line.strip()!r}"
            )
        v = parse_floats(f[2:4] + f[4:], path, lineno, "width, height and parameters")
        out[int(f[0])] = (f[1], int(v[0]), int(v[1]), v[2:])
    if not out:
        raise InputError(f"{path}: no cameras")
    return out


def read_images_txt(path: Path) -> list[tuple[str, int, np.ndarray]]:
    """COLMAP images.txt -> [(name, camera_id, cam2world [4, 4])] (OpenCV camera)."""
    lines = require_file(path, "COLMAP images.txt").read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i].strip()
        if not line or line.startswith("#"):
            i += 1
            continue
        f = line.split()
        if len(f) < 10:
            raise InputError(
                f"{path}:{i + 1}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line!r}"
            )
        v = parse_floats(f[1:9], path, i + 1, "QW QX QY QZ TX TY TZ CAMERA_ID")
        source = f"{path}:{i + 1} ({f[9]})"
        world2cam = pose_from_quat_wxyz(v[4:7], v[0:4], source)  # COLMAP stores world2cam, quaternion wxyz
        out.append((" ".join(f[9:]), int(v[7]), invert_rigid(world2cam, source)))
        i += 2  # the POINTS2D line (may be empty) follows every image line
    if not out:
        raise InputError(f"{path}: no registered images")
    return out


def load(root: Path, device: str | None = None) -> Sequence:
    """Read a ScanNet++ capture (or any COLMAP text model beside an image folder).

    Args:
        root: the scene folder, its ``iphone``/``dslr`` folder, or any folder holding ``colmap/``.
        device: ``"iphone"`` or ``"dslr"`` when ``root`` is a scene folder with both (default:
            iphone, which has depth).

    Returns:
        Sequence (images sorted by name) with pinhole K (pixels, OpenCV centres), cam2world
        (OpenCV), depth float32 metres for iPhone captures, else None.
    """
    if device not in (None, "iphone", "dslr"):
        raise ConfigError(f"scannetpp device: expected 'iphone' or 'dslr', got {device!r}")
    base = _model_dir(root, device)
    if base is None:
        raise InputError(f"{root}: missing colmap/images.txt (expected a ScanNet++ iphone/ or dslr/ folder)")
    cameras = read_cameras_txt(base / "colmap" / "cameras.txt")
    images = sorted(read_images_txt(base / "colmap" / "images.txt"), key=lambda x: natural_key(x[0]))
    image_dir = next((base / d for d in IMAGE_DIRS if (base / d).is_dir()), None)
    if image_dir is None:
        raise InputError(f"{base}: no image folder (expected one of {', '.join(IMAGE_DIRS)})")
    require_dir(image_dir, "images")
    cam_ids = {c for _, c, _ in images}
    if len(cam_ids) != 1:
        raise InputError(
            f"{base / 'colmap' / 'images.txt'}: images use cameras {sorted(cam_ids)}; "
            "expected one camera per capture"
        )
    cam_id = cam_ids.pop()
    if cam_id not in cameras:
        raise InputError(f"{base / 'colmap' / 'cameras.txt'}: no camera {cam_id} (used in images.txt)")
    model, width, height, params = cameras[cam_id]
    fx, fy, cx, cy, dist, fisheye = MODELS[model](params)
    K = pinhole_K(fx, fy, cx - 0.5, cy - 0.5)  # COLMAP pixel centres at +0.5 -> OpenCV integer centres
    depth_dir = base / "depth"
    has_depth = depth_dir.is_dir()
    size = (width, height)
    first = image_dir / images[0][0]
    if image_size(first) != size:
        raise InputError(f"{first}: image is {image_size(first)}, cameras.txt says {width}x{height}")
    if has_depth:
        dsize = image_size(depth_dir / (Path(images[0][0]).stem + ".png"))
        if dsize != size:
            sx, sy = dsize[0] / width, dsize[1] / height
            K = resize_intrinsics(torch.from_numpy(K), sx, sy).numpy()
            size = dsize
    maps = None
    if any(abs(d) > 0 for d in dist):
        D = np.asarray(dist, dtype=np.float64)
        if fisheye:
            maps = cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_32FC1)
        else:
            maps = cv2.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_32FC1)
    meta = {
        "camera_model": model,
        "undistorted_from": model if maps is not None else None,
        "images": str(image_dir),
        "depth_scale": DEPTH_SCALE if has_depth else None,
    }

    def load_frame(i: int) -> Frame:
        name, _, cam2world = images[i]
        image = read_rgb(image_dir / name)
        if image.shape[1::-1] != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        depth_path = depth_dir / (Path(name).stem + ".png")
        depth = ground_truth(read_depth_png, depth_path, DEPTH_SCALE) if has_depth else None
        if depth is not None and depth.shape[::-1] != size:
            raise InputError(
                f"{depth_dir / (Path(name).stem + '.png')}: depth is {depth.shape[::-1]}, expected {size}"
            )
        if maps is not None:
            image = cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            if depth is not None:
                depth = cv2.remap(depth, maps[0], maps[1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        return Frame(image=image, K=K.copy(), timestamp=float(i), depth=depth, cam2world=cam2world.copy())

    return Sequence(
        name=base.resolve().parent.name + "/" + base.resolve().name,
        format=FORMAT,
        root=str(root),
        num_frames=len(images),
        load=load_frame,
        meta=meta,
    )
