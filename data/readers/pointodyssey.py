"""PointOdyssey reader.

Layout: ``<seq>/rgbs/rgb_00000.jpg``, ``depths/depth_00000.png`` (uint16; metres =
``value / 65535 * 1000``), ``anno.npz`` with ``intrinsics`` [N, 3, 3] (pixels) and ``extrinsics``
[N, 4, 4] world2cam (OpenCV camera axes). The reader inverts world2cam into cam2world once.
Timestamps: index / 30 fps.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from data.readers.imageio import (
    ground_truth,
    list_images,
    read_depth_png,
    read_rgb,
    require_dir,
    require_file,
)
from data.readers.poses import invert_rigid
from data.schema import Frame, Sequence
from recon.errors import InputError

FORMAT = "pointodyssey"
DESCRIPTION = "PointOdyssey: rgbs/rgb_*.jpg, depths/depth_*.png (uint16 / 65535 * 1000), anno.npz"
DEPTH_SCALE = 1000.0 / 65535.0
FPS = 30.0


def detect(root: Path) -> bool:
    return (root / "anno.npz").is_file() and (root / "rgbs").is_dir()


def _read_anno(path: Path) -> tuple[np.ndarray, np.ndarray]:
    require_file(path, "PointOdyssey anno.npz (intrinsics, extrinsics)")
    try:
        with np.load(path, allow_pickle=False) as anno:
            missing = [k for k in ("intrinsics", "extrinsics") if k not in anno.files]
            if missing:
                raise InputError(f"{path}: missing array(s) {missing} (has {anno.files})")
            return anno["intrinsics"].astype(np.float64), anno["extrinsics"].astype(np.float64)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: unreadable or truncated .npz ({e})") from e


def load(root: Path) -> Sequence:
    """Read one PointOdyssey sequence folder.

    Returns:
        Sequence with depth float32 metres (0 invalid), K pixels, cam2world (OpenCV).
    """
    images = list_images(
        require_dir(root / "rgbs", "PointOdyssey rgb_XXXXX.jpg images"), (".jpg", ".jpeg", ".png")
    )
    depth_dir = root / "depths"
    Ks, world2cam = _read_anno(root / "anno.npz")
    n = len(images)
    if Ks.shape != (n, 3, 3) or world2cam.shape != (n, 4, 4):
        raise InputError(
            f"{root / 'anno.npz'}: expected intrinsics [{n}, 3, 3] and extrinsics [{n}, 4, 4] for "
            f"{n} images, got {list(Ks.shape)} and {list(world2cam.shape)}"
        )
    # anno.npz "extrinsics" are world2cam (OpenCV camera axes): invert once.
    cam2world = np.stack(
        [invert_rigid(world2cam[i], f"{root / 'anno.npz'} (extrinsics[{i}])") for i in range(n)]
    )
    if not np.isfinite(Ks).all():
        raise InputError(f"{root / 'anno.npz'}: non-finite intrinsics")

    def load_frame(i: int) -> Frame:
        depth = None
        if depth_dir.is_dir():
            name = images[i].stem.replace("rgb_", "depth_") + ".png"
            depth = ground_truth(read_depth_png, depth_dir / name, DEPTH_SCALE)
        return Frame(
            image=read_rgb(images[i]),
            K=Ks[i].copy(),
            timestamp=i / FPS,
            depth=depth,
            cam2world=cam2world[i].copy(),
        )

    return Sequence(
        name=root.resolve().name,
        format=FORMAT,
        root=str(root),
        num_frames=n,
        load=load_frame,
        meta={"depth_scale": DEPTH_SCALE},
    )
