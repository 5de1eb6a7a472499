"""Depth metrics: AbsRel, SqRel, RMSE, RMSE-log, delta < 1.25^k, with the usual alignments.

Depth is z-depth (metres for ground truth; any scale for up-to-scale predictions). A pixel is
valid where gt > min_depth (and gt < max_depth when a cap is given, and the optional mask is true).
After alignment the prediction is clipped to [min_depth, max_depth] (the common evaluation
practice). Metrics pool all valid pixels of the sequence (as video-depth benchmarks do);
``abs_rel_per_frame`` gives the per-frame curve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from recon.errors import InputError, ShapeError

ALIGN_MODES = ("median", "median_sequence", "scale_shift", "none")


@dataclass
class DepthMetrics:
    """Depth errors over all valid pixels.

    Attributes:
        abs_rel: mean |d - g| / g. sq_rel: mean (d - g)^2 / g. rmse: sqrt(mean (d - g)^2).
        rmse_log: sqrt(mean (log d - log g)^2). delta1/2/3: fraction with max(d/g, g/d) < 1.25^k.
        align: alignment mode. scale, shift: the sequence-level factors (per-frame median: the
            mean of the per-frame scales). num_pixels: valid pixels. abs_rel_per_frame: [T] list
            (NaN for frames without valid pixels).
    """

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    delta1: float
    delta2: float
    delta3: float
    align: str
    scale: float
    shift: float
    num_pixels: int
    abs_rel_per_frame: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_depth(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x.detach().cpu() if torch.is_tensor(x) else np.asarray(x)).to(torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ShapeError(f"{name}: expected depth [T, H, W] or [H, W], got {list(t.shape)}")
    return t


def _median_scale(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """median(gt) / median(pred), medians as numpy's (mean of the middle two for even counts)."""
    return float(np.median(gt.numpy()) / max(float(np.median(pred.numpy())), np.finfo(np.float64).tiny))


def _scale_shift_fit(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
    """Least-squares (s, b) minimising sum (s * pred + b - gt)^2, for pred, gt [N] float64.

    The closed form of the straight-line fit on centred values, s = cov(pred, gt) / var(pred),
    b = mean(gt) - s * mean(pred). Plain reductions rather than a LAPACK solve, so the result
    is the same to the last bit however the arrays were allocated (a threaded ``lstsq`` is not,
    and one report must not depend on which models were evaluated beside it). A constant
    prediction (var 0) gets s = 0 and b = mean(gt), the best it can do.
    """
    pm, gm = pred.mean(), gt.mean()
    dp = pred - pm
    var = float((dp * dp).mean())
    s = float((dp * (gt - gm)).mean()) / var if var > 0 else 0.0
    return s, float(gm) - s * float(pm)


def depth_metrics(
    pred,
    gt,
    align: str = "median",
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    mask=None,
) -> DepthMetrics:
    """Depth errors of a predicted sequence against ground truth.

    Args:
        pred: predicted depth [T, H, W] or [H, W] (numpy or torch), any positive scale.
        gt: ground-truth depth, same shape, metres, 0 = invalid.
        align: "median" (per-frame median(gt) / median(pred)), "median_sequence" (one median scale
            for the sequence), "scale_shift" (least-squares s * pred + b over the sequence) or
            "none" (metric depth).
        min_depth: gt at or below is invalid; predictions are clipped up to it.
        max_depth: optional cap: gt at or above is invalid; predictions are clipped down to it.
        mask: optional bool [T, H, W] of pixels to evaluate (e.g. static pixels).

    Returns:
        :class:`DepthMetrics`.

    Raises:
        ShapeError: shapes differ. InputError: unknown mode, bad range, or no valid pixel.
    """
    pred, gt = _as_depth(pred, "pred"), _as_depth(gt, "gt")
    if pred.shape != gt.shape:
        raise ShapeError(f"pred: expected the shape of gt {list(gt.shape)}, got {list(pred.shape)}")
    if align not in ALIGN_MODES:
        raise InputError(f"align: expected one of {ALIGN_MODES}, got {align!r}")
    if not min_depth > 0 or (max_depth is not None and max_depth <= min_depth):
        raise InputError(f"depth range: expected 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    upper = float("inf") if max_depth is None else max_depth
    valid = torch.isfinite(gt) & (gt > min_depth) & (gt < upper) & torch.isfinite(pred) & (pred > 0)
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask.cpu() if torch.is_tensor(mask) else mask)).to(torch.bool)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape != gt.shape:
            raise ShapeError(f"mask: expected the shape of gt {list(gt.shape)}, got {list(mask.shape)}")
        valid &= mask
    if not valid.any():
        raise InputError(
            f"no valid depth pixels: need gt in ({min_depth}, {upper}) m with a finite positive prediction"
        )

    scale, shift = torch.ones(gt.shape[0], dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    if align == "median":
        for i in range(gt.shape[0]):
            if valid[i].any():
                scale[i] = _median_scale(pred[i][valid[i]], gt[i][valid[i]])
    elif align == "median_sequence":
        scale[:] = _median_scale(pred[valid], gt[valid])
    elif align == "scale_shift":
        scale[:], shift = _scale_shift_fit(pred[valid], gt[valid])
    aligned = (pred * scale[:, None, None] + shift).clamp(min_depth, upper)

    d, g = aligned[valid], gt[valid]
    ratio = torch.maximum(d / g, g / d)
    abs_rel_map = torch.where(valid, (aligned - gt).abs() / gt.where(valid, torch.ones_like(gt)), 0.0)
    counts = valid.sum(dim=(1, 2))
    per_frame = torch.where(counts > 0, abs_rel_map.sum(dim=(1, 2)) / counts.clamp_min(1), float("nan"))
    return DepthMetrics(
        abs_rel=float(((d - g).abs() / g).mean()),
        sq_rel=float(((d - g) ** 2 / g).mean()),
        rmse=float(((d - g) ** 2).mean().sqrt()),
        rmse_log=float(((d.log() - g.log()) ** 2).mean().sqrt()),
        delta1=float((ratio < 1.25).double().mean()),
        delta2=float((ratio < 1.25**2).double().mean()),
        delta3=float((ratio < 1.25**3).double().mean()),
        align=align,
        scale=float(scale[counts > 0].mean()),
        shift=float(shift),
        num_pixels=int(valid.sum()),
        abs_rel_per_frame=[float(v) for v in per_frame],
    )
