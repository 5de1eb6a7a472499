"""Format registry and detection: ``load_sequence(root, format=None, **options)``.

Each reader module defines ``FORMAT`` (name), ``DESCRIPTION`` (its layout in one line),
``detect(root) -> bool`` (cheap: looks for marker files only) and ``load(root, **options) ->
Sequence``. Detection tries the dataset formats in the order of :data:`READER_MODULES`; plain videos
and image folders (no ground truth) come last so a dataset is never mistaken for a bare folder.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType

from data.schema import Sequence
from recon.errors import ConfigError, InputError

# Module names under data.readers, in detection order (most specific markers first).
READER_MODULES = (
    "tum",
    "seven_scenes",
    "scannet",
    "scannetpp",
    "sintel",
    "kitti",
    "tartanair",
    "co3d",
    "dynamic_replica",
    "pointodyssey",
    "vkitti2",
    "video",
)


def _readers() -> dict[str, ModuleType]:
    out: dict[str, ModuleType] = {}
    for mod_name in READER_MODULES:
        module = importlib.import_module(f"data.readers.{mod_name}")
        for name in getattr(module, "FORMATS", (module.FORMAT,)):
            out[name] = module
    return out


def list_formats() -> dict[str, str]:
    """Format name -> one-line layout description, in detection order."""
    out = {}
    for name, module in _readers().items():
        descriptions = getattr(module, "DESCRIPTIONS", {module.FORMAT: getattr(module, "DESCRIPTION", "")})
        out[name] = descriptions[name]
    return out


FORMATS = tuple(list_formats())


def detect_format(root: str | Path) -> str:
    """Name of the format whose marker files ``root`` holds.

    Raises:
        InputError: ``root`` does not exist, or matches no known layout (the message lists them).
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory (expected a dataset sequence or a video)")
    for name, module in _readers().items():
        detector = getattr(module, "detect_format", None)
        if detector is not None:
            found = detector(root)
            if found == name:
                return name
        elif module.detect(root):
            return name
    raise InputError(
        f"{root}: not a known dataset layout, video or image folder; expected the layout of one of "
        f"{', '.join(list_formats())} (`recon data formats` describes each)"
    )


def load_sequence(root: str | Path, format: str | None = None, **options) -> Sequence:
    """Read one sequence from disk into the sample schema (frames load lazily on access).

    Args:
        root: the sequence folder (or video file) as distributed.
        format: one of :data:`FORMATS`; detected from marker files when None.
        **options: reader options (e.g. ``K`` to override intrinsics, ``scene``/``sequence`` to
            pick one of several); each reader documents its own.

    Returns:
        :class:`data.schema.Sequence` of Frames: image uint8 [H, W, 3] RGB, depth float32 [H, W]
        metres (0 invalid) or None, K [3, 3] pixels, cam2world [4, 4] (OpenCV camera, dataset
        world) or None, timestamp seconds, optional mask (True = dynamic).

    Raises:
        InputError: missing files, unknown layout, unreadable data.
        ConfigError: unknown format name or option.
    """
    root = Path(root)
    readers = _readers()
    if format is None:
        format = detect_format(root)
    elif format not in readers:
        raise ConfigError(f"unknown dataset format {format!r}; expected one of {', '.join(readers)}")
    elif not root.exists():
        raise InputError(f"{root}: no such file or directory (expected a {format} sequence)")
    module = readers[format]
    loader = getattr(module, f"load_{format}", module.load)
    params = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(params) - {"root"})
    if unknown:
        accepted = ", ".join(p for p in params if p != "root") or "none"
        raise ConfigError(f"format {format!r} has no option(s) {', '.join(unknown)}; accepted: {accepted}")
    return loader(root, **options)
