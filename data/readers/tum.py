"""TUM RGB-D and Bonn RGB-D Dynamic reader.

Layout (as distributed)::

    <seq>/rgb.txt            "# ..." header lines, then "timestamp rgb/<timestamp>.png"
    <seq>/depth.txt          same, for depth/<timestamp>.png (uint16, metres = value / 5000)
    <seq>/groundtruth.txt    "timestamp tx ty tz qx qy qz qw": cam2world, OpenCV camera, ~100 Hz
    <seq>/intrinsics.txt     optional (our synthetic generator): "# header" then "fx fy cx cy"
    <seq>/mask.txt, mask/    optional (our synthetic generator): uint8 PNG, 255 = dynamic pixel

Depth, poses and masks are associated to the RGB frames one-to-one by nearest timestamp (less
than ``max_dt`` s apart, TUM's associate.py rule). RGB frames without a depth image are dropped
(counted in ``meta["dropped_without_depth"]`` with a warning); frames without a pose get ``cam2world=None``
(``meta["frames_without_pose"]``). A sequence without groundtruth.txt or depth.txt lists them in
``meta["missing_ground_truth"]`` (``recon data check`` reports them). Ground truth that cannot be
read (a broken groundtruth.txt / depth.txt, a truncated depth PNG) raises, except inside
``data.readers.imageio.collect_ground_truth_problems``, where it is recorded and left out (the
images alone are enough to reconstruct). Intrinsics come from the ``K`` option, else ``intrinsics.txt``,
else the sequence name (``freiburg1/2/3`` or ``fr1/2/3``, ``rgbd_bonn``); otherwise an error says
what to provide.

Bonn RGB-D Dynamic uses the same layout and depth scale; its groundtruth.txt is read as given
(motion-capture marker poses; the marker-to-camera correction printed on the dataset page is not
applied, as in the usual Sim(3)-aligned evaluations), which ``meta["pose_note"]`` records.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from data.readers.imageio import (
    ground_truth,
    image_size,
    intrinsics_option,
    parse_floats,
    pinhole_K,
    read_depth_png,
    read_mask_png,
    read_rgb,
    read_table,
    require_file,
)
from data.schema import Frame, Sequence
from recon.errors import InputError
from recon.trajectory import associate_timestamps, read_tum

FORMAT = "tum"
DESCRIPTION = "TUM RGB-D / Bonn: rgb.txt, depth.txt, groundtruth.txt; depth uint16 / 5000"
DEPTH_SCALE = 1.0 / 5000.0
# Published colour-camera intrinsics (fx, fy, cx, cy) for 640x480 images.
KNOWN_INTRINSICS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
    "bonn": (542.822841, 542.576870, 315.593520, 237.756098),
}
KNOWN_SIZE = (640, 480)


def detect(root: Path) -> bool:
    return (root / "rgb.txt").is_file()


def read_file_list(path: Path) -> tuple[np.ndarray, list[str]]:
    """A TUM list file ("timestamp filename" lines after "#" headers) -> (timestamps, names)."""
    rows = read_table(path, 2, "'timestamp filename' lines")
    ts = np.array([parse_floats(r[:1], path, i, "a timestamp")[0] for i, r in enumerate(rows)])
    if ts.size == 0:
        raise InputError(f"{path}: no entries (expected 'timestamp filename' lines after '#' headers)")
    return ts, [r[1] for r in rows]


def associate(
    rgb_ts: np.ndarray, other_ts: np.ndarray, max_dt: float, rgb_path: Path, other_path: Path
) -> np.ndarray:
    """Index into ``other_ts`` for each RGB timestamp (-1 where unmatched), one-to-one nearest first.

    Uses :func:`recon.trajectory.associate_timestamps` (TUM's associate.py rule).

    Raises:
        InputError naming both files when no pair is within ``max_dt``.
    """
    try:
        ia, ib = associate_timestamps(rgb_ts, other_ts, max_dt)
    except InputError as e:
        raise InputError(
            f"{other_path}: no timestamp within {max_dt} s of any RGB timestamp in {rgb_path} "
            f"(RGB {rgb_ts.min():.3f}..{rgb_ts.max():.3f}, "
            f"this file {other_ts.min():.3f}..{other_ts.max():.3f}); "
            "expected synchronised streams"
        ) from e
    out = np.full(len(rgb_ts), -1, dtype=np.int64)
    out[ia] = ib
    return out


def sequence_intrinsics(root: Path) -> tuple[np.ndarray, str] | None:
    """(K, source) from intrinsics.txt or the sequence name, or None if neither says."""
    path = root / "intrinsics.txt"
    if path.is_file():
        rows = read_table(path, 4, "'fx fy cx cy' after '#' headers")
        if len(rows) != 1:
            raise InputError(f"{path}: expected one line 'fx fy cx cy' after '#' headers, got {len(rows)}")
        fx, fy, cx, cy = parse_floats(rows[0][:4], path, 1, "fx fy cx cy")
        return pinhole_K(fx, fy, cx, cy), str(path)
    name = root.resolve().name.lower()
    m = re.search(r"(?:freiburg|fr)([123])(?![0-9])", name)
    key = f"freiburg{m.group(1)}" if m else ("bonn" if "bonn" in name else None)
    if key is None:
        return None
    return pinhole_K(*KNOWN_INTRINSICS[key]), f"published {key} intrinsics (from the sequence name)"


def load(root: Path, K: np.ndarray | None = None, max_dt: float = 0.02) -> Sequence:
    """Read a TUM RGB-D / Bonn sequence folder.

    Args:
        root: the sequence folder (holding rgb.txt).
        K: optional [3, 3] intrinsics in pixels overriding every other source.
        max_dt: association tolerance in seconds (TUM's own tools use 0.02).

    Returns:
        Sequence of Frames: image uint8 RGB, depth float32 metres (0 invalid) or None without
        depth.txt, K pixels, cam2world (OpenCV, groundtruth world) or None, timestamp of the RGB.
    """
    rgb_list = require_file(root / "rgb.txt", "TUM list of RGB images")
    rgb_ts, rgb_names = read_file_list(rgb_list)
    meta: dict = {"depth_scale": DEPTH_SCALE, "max_dt": max_dt, "missing_ground_truth": []}
    keep = np.arange(len(rgb_ts))

    def _depth_list() -> tuple[list[str], np.ndarray]:
        depth_ts, depth_names = read_file_list(root / "depth.txt")
        return depth_names, associate(rgb_ts, depth_ts, max_dt, rgb_list, root / "depth.txt")

    def _poses() -> tuple[np.ndarray, np.ndarray]:
        # TUM lines "t tx ty tz qx qy qz qw" (quaternion xyzw): cam2world, OpenCV camera, as given.
        gt_ts, gt_poses = read_tum(root / "groundtruth.txt")
        return gt_poses, associate(rgb_ts, gt_ts, max_dt, rgb_list, root / "groundtruth.txt")

    depth_idx = None
    found_depth = ground_truth(_depth_list) if (root / "depth.txt").is_file() else None
    if not (root / "depth.txt").is_file():
        meta["missing_ground_truth"].append(f"{root / 'depth.txt'}: missing (the TUM list of depth images)")
    if found_depth is not None:
        depth_names, depth_idx = found_depth
        keep = np.flatnonzero(depth_idx >= 0)
        dropped = len(rgb_ts) - keep.size
        meta["dropped_without_depth"] = int(dropped)
        if dropped:
            warnings.warn(
                f"{root}: {dropped} RGB frames have no depth within {max_dt} s; dropped", stacklevel=2
            )

    cam2world = [None] * len(rgb_ts)
    found_poses = ground_truth(_poses) if (root / "groundtruth.txt").is_file() else None
    if not (root / "groundtruth.txt").is_file():
        meta["missing_ground_truth"].append(
            f"{root / 'groundtruth.txt'}: missing (the TUM ground-truth trajectory); no frame has a pose")
    if found_poses is not None:
        gt_poses, gt_idx = found_poses
        cam2world = [gt_poses[j] if j >= 0 else None for j in gt_idx]
        missing = int(sum(gt_idx[keep] < 0))
        meta["frames_without_pose"] = missing
        if missing:
            warnings.warn(
                f"{root}: {missing} frames have no ground-truth pose within {max_dt} s", stacklevel=2
            )
    else:
        meta["frames_without_pose"] = int(keep.size)

    mask_names: list[str | None] = [None] * len(rgb_ts)
    if (root / "mask.txt").is_file():
        mask_ts, mnames = read_file_list(root / "mask.txt")
        midx = associate(rgb_ts, mask_ts, max_dt, rgb_list, root / "mask.txt")
        mask_names = [mnames[j] if j >= 0 else None for j in midx]

    if K is None:
        found = sequence_intrinsics(root)
        if found is None:
            raise InputError(
                f"{root}: unknown TUM intrinsics: expected 'freiburg1/2/3' (or 'fr1/2/3', 'bonn') in the "
                "folder name, an intrinsics.txt ('# header' then 'fx fy cx cy'), or the K option"
            )
        K, meta["intrinsics_source"] = found
        if not meta["intrinsics_source"].endswith("intrinsics.txt"):
            size = image_size(root / rgb_names[keep[0]])
            if size != KNOWN_SIZE:
                raise InputError(
                    f"{root / rgb_names[keep[0]]}: {meta['intrinsics_source']} are for {KNOWN_SIZE[0]}x"
                    f"{KNOWN_SIZE[1]} images, this one is {size[0]}x{size[1]}; pass K for resized copies"
                )
    else:
        K = intrinsics_option(K)
        meta["intrinsics_source"] = "K option"

    def load_frame(i: int) -> Frame:
        j = keep[i]
        depth = None
        if depth_idx is not None:
            depth = ground_truth(read_depth_png, root / depth_names[depth_idx[j]], DEPTH_SCALE)
        mask = read_mask_png(root / mask_names[j]) if mask_names[j] is not None else None
        pose = cam2world[j]
        return Frame(
            image=read_rgb(root / rgb_names[j]),
            K=K.copy(),
            timestamp=float(rgb_ts[j]),
            depth=depth,
            cam2world=None if pose is None else pose.copy(),
            mask=mask,
        )

    variant = "bonn" if "bonn" in root.resolve().name.lower() else "tum"
    meta["variant"] = variant
    if variant == "bonn":
        meta["pose_note"] = "groundtruth.txt as given (marker poses; marker-to-camera correction not applied)"
    return Sequence(
        name=root.resolve().name,
        format=FORMAT,
        root=str(root),
        num_frames=int(keep.size),
        load=load_frame,
        meta=meta,
    )
