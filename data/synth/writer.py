"""Write a sequence in the TUM RGB-D layout, plus intrinsics, dynamic masks, meta.json and an .mp4.

Layout of one sequence folder (what the TUM reader and the video runner consume)::

    rgb/<ts>.png        uint8 RGB (PNG)
    depth/<ts>.png      uint16, z-depth metres * 5000 (0 = invalid), as TUM RGB-D
    mask/<ts>.png       uint8, 255 = dynamic (independently moving) pixel, 0 = static
    rgb.txt depth.txt mask.txt   '#' header lines, then 'timestamp path' per frame
    groundtruth.txt     '#' header, then 'ts tx ty tz qx qy qz qw' (cam2world, OpenCV camera)
    intrinsics.txt      '# fx fy cx cy' header line, then one line 'fx fy cx cy' (pixels)
    meta.json           generator settings, seed, fps, depth scale, resolution, frame count
    video.mp4           the RGB stream (OpenCV VideoWriter, mp4v) at meta.json's fps

Timestamps are ``i / fps`` seconds written with 6 decimals; rgb, depth and mask share them. The
folder is written under ``<out>.partial`` and renamed at the end, so an interrupted write never
leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from data.schema import Sequence
from recon.errors import InputError
from recon.trajectory import write_tum

DEPTH_SCALE = 5000.0  # TUM RGB-D: depth PNG value = metres * 5000
_MAX_DEPTH = 65535 / DEPTH_SCALE


def _list_file(path: Path, title: str, source: str, rows: list[tuple[str, str]]) -> None:
    with path.open("w") as f:
        f.write(f"# {title}\n# file: '{source}'\n# timestamp filename\n")
        for ts, name in rows:
            f.write(f"{ts} {name}\n")


def _imwrite(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise InputError(f"{path}: could not write the PNG (disk full or not writable?)")


def write_tum_sequence(
    seq: Sequence,
    out: str | Path,
    fps: float = 30.0,
    video: bool = True,
    extra_meta: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render/read every frame of ``seq`` once and write the folder described in the module doc.

    Args:
        seq: any sequence whose frames have depth, cam2world and (optionally) mask.
        out: the sequence folder to create (must not exist yet).
        fps: frame rate of video.mp4 (timestamps come from the frames).
        video: also write video.mp4.
        extra_meta: merged into meta.json (e.g. the generator's settings).
        progress: called with 1 after each frame (e.g. ``tqdm.update``).

    Returns:
        The folder written.

    Raises:
        InputError: ``out`` exists, its parent is not writable, a frame lacks depth or pose, or
            the video cannot be opened.
    """
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists (expected a new folder for the sequence)")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        for sub in ("rgb", "depth", "mask"):
            (partial / sub).mkdir(parents=True)
    except OSError as err:
        raise InputError(f"{out}: cannot create the folder ({err.strerror})") from err

    try:
        _write_frames_and_lists(seq, partial, out, fps, video, extra_meta, progress)
    except BaseException:  # incl. Ctrl-C: leave nothing half-written behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return out


def _write_frames_and_lists(seq, partial: Path, out: Path, fps, video, extra_meta, progress) -> None:
    writer = None
    rows: list[tuple[str, str]] = []
    stamps, poses, K = [], [], None
    try:
        for frame in seq:
            if frame.depth is None or frame.cam2world is None:
                raise InputError(f"{seq.name} frame {frame.index}: expected depth and cam2world (TUM)")
            ts = f"{frame.timestamp:.6f}"
            h, w = frame.image.shape[:2]
            _imwrite(partial / "rgb" / f"{ts}.png", frame.image[:, :, ::-1])
            depth = np.where((frame.depth > 0) & (frame.depth < _MAX_DEPTH), frame.depth, 0.0)
            _imwrite(partial / "depth" / f"{ts}.png", np.round(depth * DEPTH_SCALE).astype(np.uint16))
            mask = frame.mask if frame.mask is not None else np.zeros((h, w), dtype=bool)
            _imwrite(partial / "mask" / f"{ts}.png", np.where(mask, 255, 0).astype(np.uint8))
            if video:
                if writer is None:
                    writer = cv2.VideoWriter(
                        str(partial / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h)
                    )
                    if not writer.isOpened():
                        raise InputError(f"{partial / 'video.mp4'}: OpenCV could not open an mp4v writer")
                writer.write(np.ascontiguousarray(frame.image[:, :, ::-1]))
            rows.append((ts, ts))
            stamps.append(float(ts))
            poses.append(frame.cam2world)
            K = frame.K if K is None else K
            if progress is not None:
                progress(1)
    finally:
        if writer is not None:
            writer.release()

    if not rows:
        raise InputError(f"{seq.name}: no frames to write")
    _list_file(partial / "rgb.txt", "color images", out.name, [(t, f"rgb/{n}.png") for t, n in rows])
    _list_file(partial / "depth.txt", "depth maps", out.name, [(t, f"depth/{n}.png") for t, n in rows])
    _list_file(
        partial / "mask.txt",
        "dynamic masks (uint8, 255 = dynamic)",
        out.name,
        [(t, f"mask/{n}.png") for t, n in rows],
    )
    write_tum(partial / "groundtruth.txt", np.array(stamps), np.stack(poses))
    with (partial / "intrinsics.txt").open("w") as f:
        f.write("# fx fy cx cy\n")
        f.write(f"{K[0, 0]:.9g} {K[1, 1]:.9g} {K[0, 2]:.9g} {K[1, 2]:.9g}\n")
    meta = {
        "name": seq.name,
        "num_frames": len(rows),
        "width": int(w),
        "height": int(h),
        "fps": float(fps),
        "depth_scale": DEPTH_SCALE,
        "video": "video.mp4" if video else None,
        "conventions": "OpenCV camera, cam2world, metres; TUM quaternion order qx qy qz qw",
        **{k: v for k, v in seq.meta.items() if _jsonable(v)},
        **(extra_meta or {}),
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True
