"""Image, depth and text-table I/O shared by the dataset readers, with errors that name the file.

Every function raises :class:`recon.errors.InputError` naming the path and what was expected when a
file is missing, truncated, of the wrong bit depth or unparsable; readers never see ``None`` from
OpenCV. Conventions: images are returned as uint8 [H, W, 3] RGB; depth as float32 [H, W] metres
with 0 = invalid.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from recon.errors import ConfigError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_T = TypeVar("_T")
_GROUND_TRUTH_PROBLEMS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "ground_truth_problems", default=None
)


@contextmanager
def collect_ground_truth_problems() -> Iterator[list[str]]:
    """Within this block, ground truth that cannot be read is recorded, not raised.

    Readers read a frame's depth and pose (and a sequence's ground-truth files) through
    :func:`ground_truth`. Normally a missing or broken file raises InputError (``recon data check``
    reports it as a problem); inside this block its message is appended to the yielded list and the
    value is None, so a reconstruction, which needs only the images, goes on (``recon run`` warns and
    counts).
    """
    problems: list[str] = []
    token = _GROUND_TRUTH_PROBLEMS.set(problems)
    try:
        yield problems
    finally:
        _GROUND_TRUTH_PROBLEMS.reset(token)


def ground_truth(read: Callable[..., _T], *args, **kwargs) -> _T | None:
    """``read(*args, **kwargs)`` for a ground-truth value: raises its InputError, or records it and
    returns None inside :func:`collect_ground_truth_problems`."""
    try:
        return read(*args, **kwargs)
    except InputError as e:
        problems = _GROUND_TRUTH_PROBLEMS.get()
        if problems is None:
            raise
        problems.append(str(e))
        return None


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise InputError saying what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing file (expected {what})")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise InputError saying what it should hold."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: missing directory (expected {what})")
    return path


def _check_jpeg_complete(path: Path) -> None:
    # libjpeg decodes a truncated JPEG with only a warning (grey bottom rows); a complete file
    # ends with the EOI marker FF D9 (possibly followed by padding).
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64))
        tail = f.read()
    if b"\xff\xd9" not in tail:
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker); re-download or re-export it")


def _imread(path: Path, flags: int, what: str) -> np.ndarray:
    path = require_file(path, what)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        _check_jpeg_complete(path)
    # np.fromfile + imdecode also handles non-ASCII paths, which cv2.imread does not everywhere.
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise InputError(f"{path}: unreadable or truncated image (expected {what})")
    return img


def read_rgb(path: Path) -> np.ndarray:
    """Read a colour (or grey) image as uint8 [H, W, 3] RGB.

    16-bit colour images are scaled to 8 bits; grey images are repeated over 3 channels.
    """
    img = _imread(path, cv2.IMREAD_UNCHANGED, "an 8-bit colour image")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    if img.dtype != np.uint8:
        raise InputError(f"{path}: expected an 8-bit colour image, got dtype {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_uint16_png(path: Path, what: str = "a 16-bit single-channel PNG") -> np.ndarray:
    """Read a single-channel uint16 PNG exactly (no scaling); error on any other bit depth."""
    img = _imread(path, cv2.IMREAD_UNCHANGED, what)
    if img.dtype != np.uint16 or img.ndim != 2:
        channels = 1 if img.ndim == 2 else img.shape[2]
        raise InputError(f"{path}: expected {what}, got {img.dtype} with {channels} channel(s)")
    return img


def read_depth_png(
    path: Path, scale: float, invalid_values: tuple[int, ...] = (0,), what: str | None = None
) -> np.ndarray:
    """Read a uint16 depth PNG as float32 metres: ``depth = png * scale``; listed codes -> 0.

    Args:
        path: the PNG.
        scale: metres per unit (TUM 1/5000, ScanNet 1/1000, KITTI 1/256, vKITTI2 1/100).
        invalid_values: raw codes meaning "no depth" (always includes 0 in practice; 7-Scenes
            also uses 65535).
        what: description for error messages.

    Returns:
        [H, W] float32 metres, 0 = invalid.
    """
    raw = read_uint16_png(path, what or f"a uint16 depth PNG (metres = value * {scale:g})")
    depth = raw.astype(np.float32) * np.float32(scale)
    for code in invalid_values:
        depth[raw == code] = 0.0
    return depth


def read_float16_depth_png(path: Path, scale: float = 1.0) -> np.ndarray:
    """Read a CO3Dv2 / Dynamic Replica depth PNG: uint16 bits that are really float16 values.

    Returns:
        [H, W] float32 ``float16_value * scale``, non-finite or negative values set to 0.
    """
    raw = read_uint16_png(path, "a uint16 PNG holding float16 depth bits (CO3Dv2 layout)")
    depth = raw.view(np.float16).astype(np.float32) * np.float32(scale)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def read_mask_png(path: Path) -> np.ndarray:
    """Read an 8-bit mask PNG as bool [H, W]: True where the value is > 127."""
    img = _imread(path, cv2.IMREAD_UNCHANGED, "an 8-bit mask PNG (255 = set)")
    if img.ndim == 3:
        img = img[:, :, 0]
    if img.dtype != np.uint8:
        raise InputError(f"{path}: expected an 8-bit mask PNG, got {img.dtype}")
    return img > 127


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header only (Pillow), InputError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = require_file(path, "an image")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: unreadable image header ({e})") from e


def natural_key(path: Path | str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", Path(path).name)]


def list_images(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files of a folder, sorted naturally; InputError if there are none."""
    folder = require_dir(folder, "a folder of images")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file()), key=natural_key
    )
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(suffixes)}) found")
    return files


def read_table(path: Path, min_cols: int, what: str) -> list[list[str]]:
    """Whitespace/comma-separated text table: skip blank and ``#`` lines, check column counts.

    Returns:
        rows of string fields (each with >= ``min_cols`` fields).
    """
    path = require_file(path, what)
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        if len(fields) < min_cols:
            raise InputError(
                f"{path}:{lineno}: expected {what} (>= {min_cols} fields), got {len(fields)}: {line!r}"
            )
        rows.append(fields)
    return rows


def parse_floats(fields: list[str], path: Path, lineno: int | str, what: str) -> np.ndarray:
    """Parse strings as float64, raising InputError that names the file and line."""
    try:
        return np.array([float(x) for x in fields], dtype=np.float64)
    except ValueError as e:
        raise InputError(f"{path}:{lineno}: expected {what} as numbers ({e})") from e


def read_matrix(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """A whitespace-separated numeric matrix file (e.g. a 4x4 pose); checks the value count."""
    path = require_file(path, what)
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as e:
        raise InputError(f"{path}: expected {what} as numbers ({e})") from e
    n = shape[0] * shape[1]
    if values.size != n:
        raise InputError(f"{path}: expected {what} ({shape[0]}x{shape[1]} = {n} numbers), got {values.size}")
    return values.reshape(shape)


def pinhole_K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 float64 pinhole intrinsics in pixels (OpenCV, pixel centres at integers)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def intrinsics_option(K) -> np.ndarray:
    """A user's ``K`` option (3x3 pixels, or ``(fx, fy, cx, cy)``) as a checked float64 [3, 3].

    Raises:
        ConfigError: wrong shape, non-finite values or non-positive focal lengths.
    """
    try:
        M = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"K: expected a 3x3 matrix or (fx, fy, cx, cy), got {K!r}") from e
    if M.shape == (4,):
        M = pinhole_K(*M)
    if M.shape != (3, 3) or not np.isfinite(M).all() or M[0, 0] <= 0 or M[1, 1] <= 0:
        raise ConfigError(
            f"K: expected a 3x3 matrix or (fx, fy, cx, cy) with positive focal lengths, got {K!r}"
        )
    return M
