"""Validate a sequence read by any reader: per-frame consistency checks and a summary.

Used by ``recon data check``. Every frame is loaded (or every ``stride``-th, up to
``max_frames``); a frame that fails to load (a truncated image or ground-truth depth, a broken pose)
is reported as a problem instead of stopping the check. Ground-truth files that the layout ships but
the sequence lacks (``meta["missing_ground_truth"]``, e.g. a TUM folder without groundtruth.txt) are
problems too: the check is strict where ``recon run`` is lenient.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from data.readers.poses import check_pose
from data.schema import Frame, Sequence
from recon.errors import ReconError


@dataclass
class CheckReport:
    """What ``recon data check`` prints (and writes with ``--json``)."""

    format: str
    name: str
    root: str
    num_frames: int
    checked_frames: int = 0
    resolutions: dict[str, int] = field(default_factory=dict)  # "WxH" -> frame count
    fx_range: list[float] | None = None
    frames_with_depth: int = 0
    depth_min: float | None = None
    depth_median: float | None = None  # median of per-frame medians of valid depth
    depth_max: float | None = None
    valid_depth_fraction: float | None = None  # over the pixels of frames that have depth
    frames_with_pose: int = 0
    frames_with_mask: int = 0
    time_span: list[float] | None = None
    notes: list[str] = field(default_factory=list)  # reader warnings, meta facts
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _frame_problems(i: int, f: Frame, first_hw: tuple[int, int] | None) -> list[str]:
    out = []
    img = f.image
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        return [
            f"frame {i}: image is not uint8 HxWx3 (got {getattr(img, 'dtype', type(img))} "
            f"{getattr(img, 'shape', '')})"
        ]
    H, W = img.shape[:2]
    if first_hw is not None and (H, W) != first_hw:
        out.append(f"frame {i}: image is {W}x{H}, frame 0 is {first_hw[1]}x{first_hw[0]}")
    K = np.asarray(f.K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        out.append(f"frame {i}: invalid intrinsics {K.tolist()}")
    elif not (0 <= K[0, 2] <= W and 0 <= K[1, 2] <= H):
        out.append(f"frame {i}: principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) outside the {W}x{H} image")
    if f.depth is not None:
        d = f.depth
        if d.shape != (H, W):
            out.append(f"frame {i}: depth is {d.shape[1]}x{d.shape[0]}, image is {W}x{H}")
        if d.dtype != np.float32:
            out.append(f"frame {i}: depth dtype {d.dtype}, expected float32 metres")
        if not np.isfinite(d).all():
            out.append(f"frame {i}: {int((~np.isfinite(d)).sum())} non-finite depth values")
        if (d < 0).any():
            out.append(f"frame {i}: {int((d < 0).sum())} negative depth values")
        if not (d > 0).any():
            out.append(f"frame {i}: no valid depth pixel")
    if f.cam2world is not None:
        try:
            check_pose(f.cam2world, f"frame {i} cam2world")
        except ReconError as e:
            out.append(str(e))
    if f.mask is not None and f.mask.shape != (H, W):
        out.append(f"frame {i}: mask is {f.mask.shape[1]}x{f.mask.shape[0]}, image is {W}x{H}")
    return out


def check_sequence(seq: Sequence, max_frames: int | None = None, stride: int = 1) -> CheckReport:
    """Load frames of ``seq`` and collect statistics and problems.

    Args:
        seq: any Sequence (from :func:`data.load_sequence`).
        max_frames: check at most this many frames (None: all).
        stride: check every ``stride``-th frame.

    Returns:
        CheckReport; ``problems`` is empty when every checked frame is consistent.
    """
    rep = CheckReport(format=seq.format, name=seq.name, root=seq.root, num_frames=len(seq))
    for key in ("dropped_without_depth", "frames_without_pose", "skipped_invalid_pose"):
        if seq.meta.get(key):
            rep.notes.append(f"{key.replace('_', ' ')}: {seq.meta[key]}")
    if seq.meta.get("intrinsics_guessed"):
        rep.notes.append(f"intrinsics guessed ({seq.meta.get('fov_deg')} degree horizontal FoV)")
    if seq.meta.get("depth_registered") is False:
        rep.notes.append("depth is not registered to the colour images")
    # ground truth the layout ships but this copy lacks (e.g. a TUM folder without groundtruth.txt)
    rep.problems += [str(p) for p in seq.meta.get("missing_ground_truth") or []]
    if len(seq) == 0:
        rep.problems.append("the sequence has no frames")
        return rep
    indices = list(range(0, len(seq), max(1, stride)))[: max_frames if max_frames else None]
    first_hw = None
    fxs, medians, times = [], [], []
    mins, maxs, valid, total = [], [], 0, 0
    for i in indices:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                f = seq[i]
            for w in caught:
                rep.notes.append(f"frame {i}: {w.message}")
        except ReconError as e:
            rep.problems.append(f"frame {i}: {e}")
            continue
        rep.checked_frames += 1
        rep.problems += _frame_problems(i, f, first_hw)
        if not isinstance(f.image, np.ndarray) or f.image.ndim != 3:
            continue
        H, W = f.image.shape[:2]
        first_hw = first_hw or (H, W)
        rep.resolutions[f"{W}x{H}"] = rep.resolutions.get(f"{W}x{H}", 0) + 1
        fxs.append(float(np.asarray(f.K)[0, 0]))
        times.append(float(f.timestamp))
        if f.depth is not None:
            rep.frames_with_depth += 1
            d = f.depth[np.isfinite(f.depth) & (f.depth > 0)]
            valid += d.size
            total += f.depth.size
            if d.size:
                mins.append(float(d.min()))
                maxs.append(float(d.max()))
                medians.append(float(np.median(d)))
        rep.frames_with_pose += f.cam2world is not None
        rep.frames_with_mask += f.mask is not None
    if fxs:
        rep.fx_range = [min(fxs), max(fxs)]
        rep.time_span = [times[0], times[-1]]
        if any(b <= a for a, b in zip(times, times[1:], strict=False)):
            rep.problems.append("timestamps are not strictly increasing")
    if mins:
        rep.depth_min, rep.depth_max, rep.depth_median = min(mins), max(maxs), float(np.median(medians))
    if total:
        rep.valid_depth_fraction = valid / total
    return rep


def format_report(rep: CheckReport) -> str:
    """Human-readable summary, one fact per line."""
    n = max(rep.checked_frames, 1)
    lines = [
        ("format", rep.format),
        ("sequence", rep.name),
        ("root", rep.root),
        ("frames", f"{rep.num_frames} (checked {rep.checked_frames})"),
        (
            "resolution",
            ", ".join(
                f"{k} ({v} frames)" if len(rep.resolutions) > 1 else k for k, v in rep.resolutions.items()
            )
            or "-",
        ),
        ("focal fx", "-" if rep.fx_range is None else f"{rep.fx_range[0]:.2f} .. {rep.fx_range[1]:.2f} px"),
    ]
    if rep.frames_with_depth:
        rng = (
            "no valid depth"
            if rep.depth_min is None
            else (f"{rep.depth_min:.3f} .. {rep.depth_max:.3f} (median {rep.depth_median:.3f})")
        )
        lines.append(("depth", f"{rep.frames_with_depth}/{rep.checked_frames} frames; range {rng}"))
        lines.append(("valid depth", f"{100 * (rep.valid_depth_fraction or 0):.1f}% of pixels"))
    else:
        lines.append(("depth", "none"))
    lines.append(
        (
            "poses",
            f"{rep.frames_with_pose}/{rep.checked_frames} frames "
            f"({100 * rep.frames_with_pose / n:.1f}% coverage)",
        )
    )
    lines.append(("masks", f"{rep.frames_with_mask}/{rep.checked_frames} frames"))
    if rep.time_span:
        lines.append(("timestamps", f"{rep.time_span[0]:.3f} .. {rep.time_span[1]:.3f} s"))
    lines += [("note", x) for x in rep.notes]
    lines += [("problem", x) for x in rep.problems] or [("problems", "none")]
    return "\n".join(f"{k:<12} {v}" for k, v in lines)
