"""CO3Dv2 reader, and the PyTorch3D-camera annotation parsing that Dynamic Replica shares.

Layout: ``<dataset>/<category>/frame_annotations.jgz`` (gzipped JSON list, one dict per frame of
every sequence of the category) and ``<dataset>/<category>/<sequence>/{images/frame000001.jpg,
depths/frame000001.jpg.geometric.png, depth_masks/frame000001.png}``. Annotation paths are
relative to ``<dataset>``. Depth PNGs hold float16 bits in uint16 pixels; metres-like scene units =
``float16 * depth.scale_adjustment``, multiplied by the depth mask when one is given.

Cameras are PyTorch3D cameras in NDC (conversion to OpenCV done once, in
:func:`opencv_from_pytorch3d`):

- extrinsics, row-vector convention ``X_cam = X_world @ R + T`` with camera axes +X left, +Y up,
  +Z forward; OpenCV axes are ``F = diag(-1, -1, 1)`` of those, so
  ``world2cam_cv = [F R^T | F T]`` and ``cam2world`` is its inverse;
- intrinsics: NDC spans the image edges, ``+1`` at the left/top edge; with ``s = min(H, W) / 2``
  (``ndc_isotropic``; ``ndc_norm_image_bounds`` uses ``W/2`` and ``H/2``): ``fx = f_x s``,
  ``cx = W/2 - 0.5 - p_x s`` (the ``- 0.5`` moves from pixel-corner to pixel-centre coordinates).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from data.readers.imageio import ground_truth, read_float16_depth_png, read_mask_png, read_rgb, require_file
from data.readers.poses import invert_rigid
from data.schema import Frame, Sequence
from recon.errors import InputError

FORMAT = "co3d"
DESCRIPTION = "CO3Dv2: <category>/frame_annotations.jgz + <category>/<sequence>/{images,depths,depth_masks}/"
ANNOTATIONS = "frame_annotations.jgz"


def detect(root: Path) -> bool:
    return (root.resolve().parent / ANNOTATIONS).is_file() and (root / "images").is_dir()


def read_frame_annotations(path: Path) -> list[dict]:
    """Read a gzipped JSON list of frame annotations; InputError if missing or malformed."""
    require_file(path, "gzipped JSON frame annotations")
    try:
        with gzip.open(path, "rt", encoding="utf8") as f:
            data = json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable gzipped JSON list of frame annotations ({e})") from e
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise InputError(f"{path}: expected a JSON list of frame-annotation objects")
    return data


def opencv_from_pytorch3d(
    viewpoint: dict, image_hw: tuple[int, int], source: str
) -> tuple[np.ndarray, np.ndarray]:
    """A CO3D ``viewpoint`` (PyTorch3D NDC camera) -> (K [3, 3] pixels, cam2world [4, 4] OpenCV).

    Args:
        viewpoint: dict with ``R`` [3][3], ``T`` [3], ``focal_length`` [2], ``principal_point`` [2],
            ``intrinsics_format`` (``ndc_isotropic`` or ``ndc_norm_image_bounds``).
        image_hw: (H, W) of the image in pixels.
        source: where it came from, for errors.
    """
    try:
        R = np.asarray(viewpoint["R"], dtype=np.float64).reshape(3, 3)
        T = np.asarray(viewpoint["T"], dtype=np.float64).reshape(3)
        f = np.asarray(viewpoint["focal_length"], dtype=np.float64).reshape(2)
        p = np.asarray(viewpoint["principal_point"], dtype=np.float64).reshape(2)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(
            f"{source}: viewpoint needs R [3x3], T [3], focal_length [2], principal_point [2] ({e})"
        ) from e
    fmt = viewpoint.get("intrinsics_format", "ndc_norm_image_bounds")
    H, W = image_hw
    if fmt == "ndc_isotropic":
        s = np.array([min(H, W) / 2.0, min(H, W) / 2.0])
    elif fmt == "ndc_norm_image_bounds":
        s = np.array([W / 2.0, H / 2.0])
    else:
        raise InputError(
            f"{source}: unknown intrinsics_format {fmt!r} (expected ndc_isotropic or ndc_norm_image_bounds)"
        )
    K = np.array(
        [
            [f[0] * s[0], 0.0, W / 2.0 - 0.5 - p[0] * s[0]],
            [0.0, f[1] * s[1], H / 2.0 - 0.5 - p[1] * s[1]],
            [0.0, 0.0, 1.0],
        ]
    )
    F = np.diag(
        [-1.0, -1.0, 1.0]
    )  # PyTorch3D camera axes (left, up, forward) -> OpenCV (right, down, forward)
    world2cam = np.eye(4)
    world2cam[:3, :3] = F @ R.T  # row-vector X_cam = X_world @ R + T  ->  column X_cam = R^T X_world + T
    world2cam[:3, 3] = F @ T
    return K, invert_rigid(world2cam, source)


def _resolve(bases: tuple[Path, ...], rel: str, what: str) -> Path:
    for base in bases:
        if (base / rel).is_file():
            return base / rel
    raise InputError(f"{bases[0] / rel}: missing file (expected {what}, path from the frame annotations)")


def load_annotated_sequence(
    annotation_path: Path,
    sequence: str,
    format_name: str,
    root: Path,
    camera: str | None = None,
    annotations: list[dict] | None = None,
) -> Sequence:
    """Read one sequence described by a CO3D-style annotation list (CO3Dv2, Dynamic Replica).

    Args:
        annotation_path: the ``.jgz`` file.
        sequence: ``sequence_name`` to select.
        format_name: ``Sequence.format``.
        root: the path the user gave (recorded in the Sequence).
        camera: keep only frames whose ``camera_name`` equals it (stereo datasets), if given.
        annotations: the parsed file when the caller already read it.

    Returns:
        Sequence sorted by frame_number: depth float32 scene units (0 invalid), K pixels,
        cam2world OpenCV.
    """
    if annotations is None:
        annotations = read_frame_annotations(annotation_path)
    frames = [a for a in annotations if a.get("sequence_name") == sequence]
    if camera is not None and any("camera_name" in a for a in frames):
        frames = [a for a in frames if a.get("camera_name") == camera]
    if not frames:
        raise InputError(
            f"{annotation_path}: no frames of sequence {sequence!r}"
            + (f" with camera_name {camera!r}" if camera else "")
        )
    try:
        frames.sort(key=lambda a: int(a["frame_number"]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(
            f"{annotation_path}: every frame annotation needs an integer frame_number ({e})"
        ) from e
    bases = (annotation_path.resolve().parent.parent, annotation_path.resolve().parent)

    def load_frame(i: int) -> Frame:
        a = frames[i]
        source = f"{annotation_path} (sequence {sequence}, frame {a['frame_number']})"
        if "image" not in a or "path" not in a["image"] or "viewpoint" not in a:
            raise InputError(f"{source}: expected 'image': {{'path', 'size'}} and 'viewpoint' entries")
        image = read_rgb(_resolve(bases, a["image"]["path"], "the frame's image"))
        H, W = image.shape[:2]
        if "size" in a["image"] and tuple(a["image"]["size"]) != (H, W):
            raise InputError(
                f"{source}: annotation says image size (H, W) {tuple(a['image']['size'])}, "
                f"the file is {(H, W)}"
            )
        K, cam2world = opencv_from_pytorch3d(a["viewpoint"], (H, W), source)
        d = a.get("depth") or {}

        def read_depth() -> np.ndarray:
            depth = read_float16_depth_png(
                _resolve(bases, d["path"], "the frame's depth PNG"),
                float(d.get("scale_adjustment", 1.0) or 1.0),
            )
            if d.get("mask_path"):
                depth[~read_mask_png(_resolve(bases, d["mask_path"], "the frame's depth mask"))] = 0.0
            if depth.shape != (H, W):
                raise InputError(f"{source}: depth is {depth.shape}, image is {(H, W)}")
            return depth

        depth = ground_truth(read_depth) if d.get("path") else None
        return Frame(
            image=image, K=K, timestamp=float(a.get("frame_timestamp", i)), depth=depth, cam2world=cam2world
        )

    return Sequence(
        name=sequence,
        format=format_name,
        root=str(root),
        num_frames=len(frames),
        load=load_frame,
        meta={"annotations": str(annotation_path), "depth_units": "dataset scene units"},
    )


def load(root: Path, sequence: str | None = None) -> Sequence:
    """Read one CO3Dv2 sequence.

    Args:
        root: the sequence folder, or the category folder with ``sequence=``.
        sequence: sequence_name when ``root`` is the category folder.
    """
    root_r = root.resolve()
    if (root_r / ANNOTATIONS).is_file():
        if sequence is None:
            raise InputError(
                f"{root}: a CO3D category folder; pass sequence= (a sequence_name in {ANNOTATIONS})"
            )
        return load_annotated_sequence(root_r / ANNOTATIONS, sequence, FORMAT, root)
    return load_annotated_sequence(root_r.parent / ANNOTATIONS, sequence or root_r.name, FORMAT, root)
