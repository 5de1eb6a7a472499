"""MPI Sintel reader (images, depth and camera data of the training set).

Layout: ``training/{final,clean}/<scene>/frame_0001.png``, ``training/depth/<scene>/frame_0001.dpt``,
``training/camdata_left/<scene>/frame_0001.cam``. Binary formats (little endian):

- ``.dpt``: float32 tag 202021.25, int32 width, int32 height, float32 depth [H*W] (z-depth).
- ``.cam``: float32 tag 202021.25, float64 K [3x3] (pixels), float64 [3x4] world2cam [R | t].

Sintel cameras already use OpenCV axes (x right, y down, z forward); the reader inverts world2cam
into cam2world once. Scene units are Sintel's own (roughly metres). Timestamps: index / 24 fps.
``root`` is either a scene folder under ``final/`` or ``clean/``, or the split folder with
``scene=``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.readers.imageio import ground_truth, natural_key, read_rgb, require_dir, require_file
from data.readers.poses import invert_rigid, rigid_from_3x4
from data.schema import Frame, Sequence
from recon.errors import InputError

FORMAT = "sintel"
DESCRIPTION = "MPI Sintel: {final,clean}/<scene>/*.png, depth/<scene>/*.dpt, camdata_left/<scene>/*.cam"
TAG = 202021.25
FPS = 24.0
PASSES = ("final", "clean")


def _split_and_scene(root: Path, scene: str | None) -> tuple[Path, str, str]:
    root = root.resolve()
    if root.parent.name in PASSES and (root.parent.parent / "camdata_left").is_dir():
        return root.parent.parent, root.parent.name, root.name
    if (root / "camdata_left").is_dir():
        if scene is None:
            scenes = sorted(p.name for p in (root / "camdata_left").iterdir() if p.is_dir())
            raise InputError(f"{root}: a Sintel split with several scenes; pass scene= one of {scenes}")
        render_pass = next((p for p in PASSES if (root / p / scene).is_dir()), None)
        if render_pass is None:
            raise InputError(f"{root}: no final/{scene} or clean/{scene} folder of images")
        return root, render_pass, scene
    raise InputError(f"{root}: expected a Sintel scene folder under final/ or clean/ (beside camdata_left/)")


def detect(root: Path) -> bool:
    root = root.resolve()
    return (root.parent.name in PASSES and (root.parent.parent / "camdata_left").is_dir()) or (
        (root / "camdata_left").is_dir() and any((root / p).is_dir() for p in PASSES)
    )


def _check_tag(data: bytes, path: Path, what: str) -> None:
    if len(data) < 4 or not np.isclose(np.frombuffer(data[:4], "<f4")[0], TAG):
        raise InputError(f"{path}: not a Sintel {what} file (expected the float32 tag {TAG} first)")


def read_dpt(path: Path) -> np.ndarray:
    """A Sintel ``.dpt`` depth file -> float32 [H, W] (non-finite or negative -> 0)."""
    data = require_file(path, "a Sintel .dpt depth file").read_bytes()
    _check_tag(data, path, ".dpt depth")
    if len(data) < 12:
        raise InputError(f"{path}: truncated .dpt header (expected tag, int32 width, int32 height)")
    w, h = (int(x) for x in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(data) != 12 + 4 * w * h:
        raise InputError(
            f"{path}: .dpt header says {w}x{h} float32 values ({12 + 4 * w * h} bytes), "
            f"file has {len(data)} bytes"
        )
    depth = np.frombuffer(data[12:], "<f4").reshape(h, w).astype(np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))


def read_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A Sintel ``.cam`` file -> (K [3, 3] pixels, world2cam [4, 4])."""
    data = require_file(path, "a Sintel .cam camera file").read_bytes()
    _check_tag(data, path, ".cam camera")
    if len(data) != 4 + 8 * 21:
        raise InputError(f"{path}: expected {4 + 8 * 21} bytes (tag, 9 + 12 float64), got {len(data)}")
    values = np.frombuffer(data[4:], "<f8")
    return values[:9].reshape(3, 3).copy(), rigid_from_3x4(values[9:].reshape(3, 4))


def load(root: Path, scene: str | None = None) -> Sequence:
    """Read one Sintel scene.

    Returns:
        Sequence with depth float32 (scene units, 0 invalid), K pixels, cam2world (OpenCV).
    """
    split, render_pass, scene = _split_and_scene(root, scene)
    images = sorted(
        require_dir(split / render_pass / scene, "Sintel frame_XXXX.png images").glob("*.png"),
        key=natural_key,
    )
    if not images:
        raise InputError(f"{split / render_pass / scene}: no frame_XXXX.png images")
    cam_dir = require_dir(split / "camdata_left" / scene, "Sintel .cam files")
    depth_dir = split / "depth" / scene
    has_depth = depth_dir.is_dir()

    def load_frame(i: int) -> Frame:
        stem = images[i].stem
        cam_path = cam_dir / f"{stem}.cam"
        K, world2cam = read_cam(cam_path)
        cam2world = invert_rigid(world2cam, str(cam_path))  # .cam holds world2cam (OpenCV axes)
        return Frame(
            image=read_rgb(images[i]),
            K=K,
            timestamp=i / FPS,
            depth=ground_truth(read_dpt, depth_dir / f"{stem}.dpt") if has_depth else None,
            cam2world=cam2world,
        )

    return Sequence(
        name=scene,
        format=FORMAT,
        root=str(root),
        num_frames=len(images),
        load=load_frame,
        meta={"pass": render_pass, "depth_units": "Sintel scene units"},
    )
