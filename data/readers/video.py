"""Plain videos (OpenCV) and image folders: frames without ground truth.

Intrinsics come from the ``K`` option ([3, 3], or ``(fx, fy, cx, cy)``) or, when not given, from a
documented guess: a pinhole camera with ``fov_deg`` (default 60) degrees horizontal field of view
and the principal point at the image centre; ``meta["intrinsics_guessed"]`` is then True and a
warning says so. Depth and poses are None. Video timestamps come from the file's frame rate; image
folders use ``fps`` (default 30, recorded in meta).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from data.readers.imageio import (
    IMAGE_SUFFIXES,
    image_size,
    intrinsics_option,
    list_images,
    pinhole_K,
    read_rgb,
)
from data.schema import Frame, Sequence
from recon.errors import ConfigError, InputError
from recon.geometry import focal_from_fov

FORMAT = "video"
DESCRIPTION = "a video file (.mp4 .avi .mov .mkv .webm ...) or a folder of images; no ground truth"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_FOV_DEG = 60.0


def detect(root: Path) -> bool:
    if root.is_file():
        return root.suffix.lower() in VIDEO_SUFFIXES
    return root.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir())


def guess_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """Pinhole K with the given horizontal FoV, square pixels, principal point at the centre."""
    if not 1.0 <= fov_deg <= 179.0:
        raise ConfigError(f"fov_deg: expected a horizontal field of view in (1, 179) degrees, got {fov_deg}")
    f = float(focal_from_fov(torch.tensor(math.radians(fov_deg), dtype=torch.float64), width))
    return pinhole_K(f, f, (width - 1) / 2.0, (height - 1) / 2.0)


def _intrinsics(K, width: int, height: int, fov_deg: float | None, source: Path, meta: dict) -> np.ndarray:
    if K is not None:
        meta["intrinsics_guessed"] = False
        return intrinsics_option(K)
    fov = DEFAULT_FOV_DEG if fov_deg is None else fov_deg
    meta["intrinsics_guessed"] = fov_deg is None
    meta["fov_deg"] = fov
    if fov_deg is None:
        warnings.warn(
            f"{source}: no intrinsics given; assuming a {fov:g} degree horizontal field of view "
            "(pass K or fov_deg)",
            stacklevel=3,
        )
    return guess_intrinsics(width, height, fov)


def _load_video(path: Path, K, fov_deg: float | None) -> Sequence:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"{path}: not a video OpenCV can open (expected {', '.join(VIDEO_SUFFIXES)})")
    ok, first = cap.read()
    if not ok or first is None:
        raise InputError(f"{path}: no decodable frame (empty or corrupt video)")
    height, width = first.shape[:2]
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if n <= 0:  # containers without a frame count: count by decoding
        n = 1
        while cap.grab():
            n += 1
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
    meta: dict = {"fps": fps if fps > 0 else None, "size": [width, height]}
    Kmat = _intrinsics(K, width, height, fov_deg, path, meta)
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # rewind after reading frame 0 (and counting)
    state = {"cap": cap, "next": 0}  # the decoder's position, so sequential reads never seek

    def load_frame(i: int) -> Frame:
        if state["next"] != i:  # random access: seek (sequential reads need none)
            state["cap"].set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = state["cap"].read()
        if not ok or bgr is None:
            raise InputError(
                f"{path}: frame {i} could not be decoded (the header says {n} frames; truncated?)"
            )
        state["next"] = i + 1
        if bgr.shape[:2] != (height, width):
            raise InputError(
                f"{path}: frame {i} is {bgr.shape[1]}x{bgr.shape[0]}, frame 0 was {width}x{height}"
            )
        return Frame(
            image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
            K=Kmat.copy(),
            timestamp=i / fps if fps > 0 else float(i),
        )

    return Sequence(name=path.stem, format=FORMAT, root=str(path), num_frames=n, load=load_frame, meta=meta)


def _load_folder(root: Path, K, fov_deg: float | None, fps: float) -> Sequence:
    files = list_images(root)
    size = image_size(files[0])
    for p in files[1:]:
        s = image_size(p)
        if s != size:
            raise InputError(
                f"{p}: image is {s[0]}x{s[1]}, expected {size[0]}x{size[1]} like {files[0].name} "
                "(all images of a sequence must have one size)"
            )
    meta: dict = {"fps": fps, "timestamps": f"index / {fps:g} fps (assumed)", "size": list(size)}
    Kmat = _intrinsics(K, size[0], size[1], fov_deg, root, meta)

    def load_frame(i: int) -> Frame:
        return Frame(image=read_rgb(files[i]), K=Kmat.copy(), timestamp=i / fps)

    return Sequence(
        name=root.resolve().name,
        format=FORMAT,
        root=str(root),
        num_frames=len(files),
        load=load_frame,
        meta=meta,
    )


def load(root: Path, K=None, fov_deg: float | None = None, fps: float = 30.0) -> Sequence:
    """Read a video file or a folder of images (sorted naturally: frame2 before frame10).

    Args:
        root: a video file or an image folder.
        K: [3, 3] pixels or (fx, fy, cx, cy); overrides the guess.
        fov_deg: horizontal field of view for the guessed K (default 60, flagged as guessed).
        fps: frame rate of an image folder (timestamps = index / fps).

    Returns:
        Sequence of Frames with image, K and timestamp; depth and cam2world None.
    """
    if fps <= 0:
        raise ConfigError(f"fps: expected a positive frame rate, got {fps}")
    if root.is_file():
        if root.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"{root}: not a video file (expected one of {', '.join(VIDEO_SUFFIXES)})")
        return _load_video(root, K, fov_deg)
    return _load_folder(root, K, fov_deg, fps)
