"""Virtual KITTI 2 reader.

Layout: ``<Scene01>/<variation, e.g. clone>/frames/rgb/Camera_0/rgb_00000.jpg``,
``frames/depth/Camera_0/depth_00000.png`` (uint16 centimetres; 65535 = sky / beyond 655.35 m,
read as invalid), ``intrinsic.txt`` (header, then ``frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]``)
and ``extrinsic.txt`` (header, then ``frame cameraID`` + 16 floats: row-major 4x4 world2cam,
OpenCV camera axes). The reader inverts world2cam into cam2world once. Timestamps: index / 10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.readers.imageio import (
    ground_truth,
    list_images,
    parse_floats,
    pinhole_K,
    read_depth_png,
    read_rgb,
    read_table,
    require_dir,
)
from data.readers.poses import invert_rigid
from data.schema import Frame, Sequence
from recon.errors import ConfigError, InputError

FORMAT = "vkitti2"
DESCRIPTION = "Virtual KITTI 2: frames/{rgb,depth}/Camera_0/, intrinsic.txt, extrinsic.txt (world2cam)"
DEPTH_SCALE = 0.01
INVALID = (0, 65535)
FPS = 10.0


def detect(root: Path) -> bool:
    return (
        (root / "extrinsic.txt").is_file()
        and (root / "intrinsic.txt").is_file()
        and (root / "frames").is_dir()
    )


def _per_frame(path: Path, ncols: int, camera: int, what: str) -> dict[int, np.ndarray]:
    rows = read_table(path, ncols, what)
    out = {}
    for r in rows:
        if not r[0].lstrip("-").isdigit():  # the header line ("frame cameraID ...")
            continue
        v = parse_floats(r[:ncols], path, f"frame {r[0]}", what)
        if int(v[1]) == camera:
            out[int(v[0])] = v[2:]
    return out


def load(root: Path, camera: int = 0) -> Sequence:
    """Read one Virtual KITTI 2 scene variation (``Scene01/clone``...).

    Args:
        camera: 0 (left) or 1 (right).

    Returns:
        Sequence with depth float32 metres (0 invalid, sky included), K pixels, cam2world (OpenCV).
    """
    if camera not in (0, 1):
        raise ConfigError(f"vkitti2 camera: expected 0 or 1, got {camera!r}")
    images = list_images(
        require_dir(root / "frames" / "rgb" / f"Camera_{camera}", "vKITTI2 rgb_XXXXX.jpg images")
    )
    intr = _per_frame(root / "intrinsic.txt", 6, camera, "'frame cameraID fx fy cx cy' lines")
    extr = _per_frame(root / "extrinsic.txt", 18, camera, "'frame cameraID' + 16 world2cam values")
    depth_dir = root / "frames" / "depth" / f"Camera_{camera}"
    frame_ids = []
    for p in images:
        digits = "".join(c for c in p.stem if c.isdigit())
        if not digits:
            raise InputError(f"{p}: expected a frame number in the name (rgb_XXXXX.jpg)")
        fid = int(digits)
        for table, name in ((intr, "intrinsic.txt"), (extr, "extrinsic.txt")):
            if fid not in table:
                raise InputError(f"{root / name}: no line for frame {fid} camera {camera} (image {p.name})")
        frame_ids.append(fid)
    # extrinsic.txt holds world2cam (OpenCV camera axes): invert once.
    cam2world = {
        f: invert_rigid(extr[f].reshape(4, 4), f"{root / 'extrinsic.txt'} (frame {f})") for f in frame_ids
    }

    def load_frame(i: int) -> Frame:
        fid = frame_ids[i]
        depth = None
        if depth_dir.is_dir():
            depth = ground_truth(read_depth_png, depth_dir / f"depth_{fid:05d}.png", DEPTH_SCALE, INVALID)
        return Frame(
            image=read_rgb(images[i]),
            K=pinhole_K(*intr[fid]),
            timestamp=fid / FPS,
            depth=depth,
            cam2world=cam2world[fid].copy(),
        )

    name = f"{root.resolve().parent.name}/{root.resolve().name}"
    return Sequence(
        name=name,
        format=FORMAT,
        root=str(root),
        num_frames=len(images),
        load=load_frame,
        meta={"depth_scale": DEPTH_SCALE, "camera": camera},
    )
