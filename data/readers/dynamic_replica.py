"""Dynamic Replica reader (stereo dynamic scenes with CO3D-style annotations).

Layout: ``<dataset>/<split>/frame_annotations_<split>.jgz`` and
``<dataset>/<split>/<sequence>/{images,depths,...}/``; annotation paths are relative to the split
folder. Cameras are PyTorch3D NDC cameras and depth is float16-in-uint16 PNG, both read with the
CO3Dv2 code (:mod:`data.readers.co3d`, which documents the OpenCV conversion). Frames of the
chosen ``camera`` (``left`` by default) are returned.
"""

from __future__ import annotations

from pathlib import Path

from data.readers.co3d import load_annotated_sequence
from data.schema import Sequence
from recon.errors import InputError

FORMAT = "dynamic_replica"
DESCRIPTION = "Dynamic Replica: <split>/frame_annotations_<split>.jgz + <split>/<sequence>/{images,depths}/"


def _annotation_file(folder: Path) -> Path | None:
    return next(iter(sorted(folder.glob("frame_annotations_*.jgz"))), None)


def detect(root: Path) -> bool:
    return _annotation_file(root.resolve().parent) is not None and (root / "images").is_dir()


def load(root: Path, sequence: str | None = None, camera: str = "left") -> Sequence:
    """Read one Dynamic Replica sequence.

    Args:
        root: the sequence folder, or the split folder with ``sequence=``.
        sequence: sequence_name when ``root`` is the split folder.
        camera: ``"left"`` or ``"right"``.
    """
    root_r = root.resolve()
    own = _annotation_file(root_r)
    if own is not None:
        if sequence is None:
            raise InputError(
                f"{root}: a Dynamic Replica split folder; pass sequence= (a sequence_name in {own.name})"
            )
        return load_annotated_sequence(own, sequence, FORMAT, root, camera=camera)
    parent = _annotation_file(root_r.parent)
    if parent is None:
        raise InputError(f"{root_r.parent}: missing frame_annotations_<split>.jgz (Dynamic Replica layout)")
    if sequence is None:
        # Sequence folders are named either <sequence_name> or <sequence_name>_<camera>.
        for cam in ("left", "right"):
            if root_r.name.endswith(f"_{cam}") and f'"{root_r.name}"' not in _annotation_text(parent):
                return load_annotated_sequence(parent, root_r.name[: -len(cam) - 1], FORMAT, root, camera=cam)
    return load_annotated_sequence(parent, sequence or root_r.name, FORMAT, root, camera=camera)


def _annotation_text(path: Path) -> str:
    import gzip

    with gzip.open(path, "rt", encoding="utf8", errors="replace") as f:
        return f.read()
