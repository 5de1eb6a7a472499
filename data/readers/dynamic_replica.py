"""Dynamic Replica reader (stereo dynamic scenes with CO3D-style annotations).

Layout: ``<dataset>/<split>/frame_annotations_<split>.jgz`` and
``<dataset>/<split>/<sequence>/{images,depths,...}/``; annotation paths are relative to the split
folder. Cameras are PyTorch3D NDC cameras and depth is float16-in-uint16 PNG, both read with the
CO3Dv2 code (:mod:`data.readers.co3d`, which documents the OpenCV conversion). Frames of the
chosen ``camera`` (``left`` by default) are returned.
"""

from __future__ import annotations

from pathlib import Path

from data.readers.co3d import load_annotated_sequence, read_frame_annotations
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
    annotations = read_frame_annotations(parent)
    if sequence is None:
        sequence = root_r.name
        names = {a.get("sequence_name") for a in annotations}
        # Sequence folders are named either <sequence_name> or <sequence_name>_<camera>.
        for cam in ("left", "right"):
            if sequence not in names and sequence.endswith(f"_{cam}") and sequence[: -len(cam) - 1] in names:
                sequence, camera = sequence[: -len(cam) - 1], cam
    return load_annotated_sequence(parent, sequence, FORMAT, root, camera=camera, annotations=annotations)
