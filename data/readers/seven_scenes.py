"""Microsoft 7-Scenes reader.

Layout: ``<scene>/seq-XX/frame-000000.{color.png, depth.png, pose.txt}`` (optionally the rendered,
colour-registered ``frame-000000.depth.proj.png`` that the common evaluation uses). Depth is uint16
millimetres with 65535 = invalid; ``pose.txt`` is a 4x4 cam2world matrix (OpenCV camera, metres).

The raw Kinect depth is NOT registered to the colour image: with ``depth="raw"`` frames carry the
depth camera's intrinsics (585, 585, 320, 240), to which the poses refer, and
``meta["depth_registered"] = False`` (a warning says so). ``depth="rendered"`` uses
``depth.proj.png`` with the colour intrinsics (525, 525, 320, 240). ``depth="auto"`` (default)
picks rendered depth when every frame has it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from data.readers.imageio import (
    ground_truth,
    image_size,
    intrinsics_option,
    natural_key,
    pinhole_K,
    read_depth_png,
    read_matrix,
    read_rgb,
)
from data.readers.poses import check_pose
from data.schema import Frame, Sequence
from recon.errors import ConfigError, InputError

FORMAT = "7scenes"
DESCRIPTION = "7-Scenes: seq-XX/frame-000000.{color.png,depth.png,pose.txt}, depth uint16 mm"
DEPTH_SCALE = 1e-3
INVALID = (0, 65535)
RAW_INTRINSICS = (585.0, 585.0, 320.0, 240.0)  # Kinect depth camera
RENDERED_INTRINSICS = (525.0, 525.0, 320.0, 240.0)  # colour camera (depth.proj.png)
KNOWN_SIZE = (640, 480)
FPS = 30.0


def detect(root: Path) -> bool:
    return root.is_dir() and next(root.glob("frame-*.color.png"), None) is not None


def load(root: Path, depth: str = "auto", K: np.ndarray | None = None) -> Sequence:
    """Read one 7-Scenes sequence folder (``seq-XX``).

    Args:
        root: the ``seq-XX`` folder.
        depth: ``"auto"``, ``"rendered"`` (depth.proj.png) or ``"raw"`` (depth.png).
        K: optional [3, 3] intrinsics override (needed for resized copies).

    Returns:
        Sequence with depth float32 metres (0 invalid), cam2world OpenCV, timestamps at 30 Hz.
    """
    if depth not in ("auto", "rendered", "raw"):
        raise ConfigError(f"7-Scenes depth option: expected 'auto', 'rendered' or 'raw', got {depth!r}")
    colors = sorted(root.glob("frame-*.color.png"), key=natural_key)
    if not colors:
        raise InputError(f"{root}: no frame-XXXXXX.color.png files (expected a 7-Scenes seq-XX folder)")
    stems = [p.name[: -len(".color.png")] for p in colors]
    has_proj = all((root / f"{s}.depth.proj.png").is_file() for s in stems)
    if depth == "rendered" and not has_proj:
        missing = next(s for s in stems if not (root / f"{s}.depth.proj.png").is_file())
        raise InputError(f"{root / (missing + '.depth.proj.png')}: missing file (expected rendered depth)")
    use_proj = depth == "rendered" or (depth == "auto" and has_proj)
    meta: dict = {
        "depth_scale": DEPTH_SCALE,
        "depth_registered": use_proj,
        "depth_file": "depth.proj.png" if use_proj else "depth.png",
    }
    if not use_proj:
        warnings.warn(
            f"{root}: raw 7-Scenes depth is not registered to the colour images; using the depth camera "
            "intrinsics (585, 585, 320, 240)",
            stacklevel=2,
        )
    if K is None:
        K = pinhole_K(*(RENDERED_INTRINSICS if use_proj else RAW_INTRINSICS))
        size = image_size(colors[0])
        if size != KNOWN_SIZE:
            raise InputError(
                f"{colors[0]}: 7-Scenes images are 640x480, this one is {size[0]}x{size[1]}; "
                "pass K for resized copies"
            )
        meta["intrinsics_source"] = "published 7-Scenes intrinsics"
    else:
        K = intrinsics_option(K)
        meta["intrinsics_source"] = "K option"
    suffix = ".depth.proj.png" if use_proj else ".depth.png"

    def load_frame(i: int) -> Frame:
        stem = root / stems[i]
        pose_path = Path(f"{stem}.pose.txt")
        pose = ground_truth(
            lambda: check_pose(read_matrix(pose_path, (4, 4), "a 4x4 cam2world matrix"), str(pose_path))
        )
        return Frame(
            image=read_rgb(colors[i]),
            K=K.copy(),
            timestamp=i / FPS,
            depth=ground_truth(read_depth_png, Path(f"{stem}{suffix}"), DEPTH_SCALE, INVALID),
            cam2world=pose,
        )

    return Sequence(
        name=f"{root.resolve().parent.name}/{root.resolve().name}",
        format=FORMAT,
        root=str(root),
        num_frames=len(stems),
        load=load_frame,
        meta=meta,
    )
