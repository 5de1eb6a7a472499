"""Long-sequence drift evaluation: one streaming pass, metrics for every prefix length, drift curves.

The model is causal: its output for frame i depends only on frames 0..i, so one pass over a
sequence gives exactly the outputs a separate run on every prefix of length L would give. The
pass keeps per-frame records (``recon.eval.scoring.GroundTruthScorer``: a pose, per-frame depth
errors, a fixed-size pixel sample) and afterwards:

- prefix metrics for every protocol length L: ATE / RPE (``pose_metrics``, Sim(3) fitted on the
  prefix) beside the static-camera and constant-velocity baselines of the same prefix
  (``pose_baselines``, same alignment) and the ratio ``ate_vs_static``; depth AbsRel /
  delta<1.25 (per-frame median scale over all pixels; sequence-level scale or scale-and-shift
  fitted on the prefix over the pixel sample), optional point-cloud
  accuracy / completeness (the prefix's trajectory Sim(3) moves the predicted points);
- per-frame error curves whose alignment is fitted on the first n frames only, so drift is not
  absorbed by the fit: camera-centre error (``per_frame_ate(..., align_first_n=n)``) and AbsRel
  at a depth scale fixed on the first n frames;
- drift rates: the least-squares slope of a curve over frames n..N-1 (after the alignment window),
  in error units per 100 frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from data.schema import Sequence
from recon.errors import InputError
from recon.eval.cloud_metrics import cloud_metrics
from recon.eval.depth_metrics import depth_metrics
from recon.eval.pose_metrics import (
    align_trajectory,
    associate_trajectories,
    ate_vs_static,
    per_frame_ate,
    pose_baselines,
    pose_metrics,
)
from recon.eval.protocols import FULL, Protocol
from recon.eval.scoring import FrameRecords, GroundTruthScorer
from recon.infer.sources import FrameStream
from recon.infer.stream import StreamSession
from recon.model.state import memory_state_norm, norm_growth
from recon.trajectory import TumWriter

MEMORY_NORM_EVERY = 100  # frames between samples of the memory-state norm (SequenceEvaluation.health)


@dataclass
class SequenceEvaluation:
    """Drift evaluation of one sequence.

    Attributes:
        name: sequence label. num_frames: frames streamed.
        prefixes: one dict per evaluated length: ``label`` (protocol entry), ``length``, ``pose``
            (PoseMetrics fields, ``scale`` = the alignment's Sim(3) scale, and ``ate_vs_static``;
            or ``error``), ``pose_baselines`` (``static_ate_rmse``, ``constant_velocity_ate_rmse``
            of the ground truth of the same frames, same alignment; or ``error``), ``depth``
            ({mode: metrics}), ``cloud`` (CloudMetrics fields, or ``error``).
        curves: per-frame lists: ``ate`` (camera-centre error, alignment on the first n frames),
            ``abs_rel`` (per-frame median scale), ``abs_rel_fixed_scale`` (scale of the first n).
        drift: ``align_frames`` (n) and rates per 100 frames: ``ate_per_100_frames``,
            ``abs_rel_fixed_scale_per_100_frames`` (NaN when undefined).
        timing: ``fps``, ``latency_ms_median``, ``latency_ms_p95``.
        health: ``nonfinite_frames`` (frames whose pose or depth held a NaN / inf),
            ``memory_norm_every`` (k), ``memory_norm`` (the largest memory-state tensor norm after
            every k-th frame and after the last, ``recon.model.state.memory_state_norm``) and
            ``memory_norm_growth`` (``norm_growth`` of those samples: ~1 for a bounded state).
    """

    name: str
    num_frames: int
    prefixes: list[dict] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    health: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def drift_rate(errors, start: int = 0) -> float:
    """Least-squares slope of ``errors[start:]`` against the frame index, per 100 frames.

    Args:
        errors: [N] per-frame errors (NaN frames are left out).
        start: first frame of the fit (the end of the alignment window).

    Returns:
        slope * 100, or NaN when fewer than 2 finite errors remain.
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    x = np.arange(len(e), dtype=np.float64)[start:]
    e = e[start:]
    ok = np.isfinite(e)
    if ok.sum() < 2:
        return float("nan")
    slope = np.polyfit(x[ok], e[ok], 1)[0]
    return float(slope * 100.0)


def resolve_lengths(lengths: Iterable, num_frames: int) -> list[tuple[int, str]]:
    """Protocol lengths (ints and ``"full"``) -> sorted distinct (length, label) with length <= num_frames.

    The label is the protocol's entry (``"100"``) or ``"full"`` for the whole sequence when no
    integer entry equals its length; lengths beyond the sequence are dropped.
    """
    ints = {int(v) for v in lengths if v != FULL}
    out = {v: str(v) for v in ints if 3 <= v <= num_frames}
    if FULL in lengths and num_frames >= 3 and num_frames not in out:
        out[num_frames] = FULL
    return sorted(out.items())


def _sim3_of(est: np.ndarray, aligned: np.ndarray, scale: float) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) with aligned = Sim(3) applied to est (recovered from the first pose: R_a = R R_e)."""
    R = aligned[0, :3, :3] @ est[0, :3, :3].T
    t = aligned[0, :3, 3] - scale * R @ est[0, :3, 3]
    return scale, R, t


def _depth_prefix(rec: FrameRecords, L: int, protocol: Protocol) -> dict:
    d = protocol.depth
    out: dict = {}
    for mode in d.align:
        if mode == "median":  # exact: pixel-weighted per-frame results over every valid pixel
            has = rec.depth_pixels[:L] > 0
            n = int(rec.depth_pixels[:L].sum())
            if not n:
                out[mode] = {"error": "no valid ground-truth depth in this prefix"}
                continue
            w = rec.depth_pixels[:L][has]
            out[mode] = {
                "abs_rel": float((rec.abs_rel[:L][has] * w).sum() / n),
                "delta1": float((rec.delta1[:L][has] * w).sum() / n),
                "scale": float(rec.depth_scale[:L][has].mean()),
                "num_pixels": n,
            }
            continue
        try:  # sequence-level alignment over the per-frame pixel sample, as a [L, 1, S] "video"
            m = depth_metrics(
                rec.pred_samples[:L, None], rec.gt_samples[:L, None], mode, d.min_depth, d.max_depth
            )
        except InputError as err:
            out[mode] = {"error": str(err)}
            continue
        res = m.to_dict()
        res.pop("abs_rel_per_frame")
        out[mode] = res
    return out


def _cloud_prefix(rec: FrameRecords, L: int, protocol: Protocol) -> dict:
    c = protocol.cloud
    posed = rec.has_pose[:L]
    est, gt = rec.est_cam2world[:L][posed], rec.gt_cam2world[:L][posed]
    try:
        aligned, scale = align_trajectory(est, gt, protocol.pose.align)
    except InputError as err:
        return {"error": str(err)}
    s, R, t = _sim3_of(est, aligned, scale)
    ok = rec.point_valid[:L] & posed[:, None]
    if ok.sum() < 4:
        return {"error": "fewer than 4 sampled points with ground truth in this prefix"}
    pred = s * rec.pred_points[:L][ok].astype(np.float64) @ R.T + t
    m = cloud_metrics(pred, rec.gt_points[:L][ok], c.threshold, icp_max_distance=c.icp_max_distance)
    res = m.to_dict()
    res.pop("icp_transform")
    return res


def prefix_metrics(rec: FrameRecords, L: int, protocol: Protocol) -> dict:
    """Metrics of the first ``L`` frames (see the module docstring)."""
    out: dict = {"length": int(L)}
    posed = rec.has_pose[:L]
    if protocol.pose.enabled:
        gt = rec.gt_cam2world[:L][posed]
        try:
            out["pose_baselines"] = pose_baselines(gt, protocol.pose.align)
        except InputError as err:
            out["pose_baselines"] = {"error": str(err)}
        try:
            pm = pose_metrics(rec.est_cam2world[:L][posed], gt, protocol.pose.align,
                              rpe_delta=protocol.pose.rpe_delta)
            static = out["pose_baselines"].get("static_ate_rmse")
            out["pose"] = {**pm.to_dict(),
                           "ate_vs_static": None if static is None else ate_vs_static(pm.ate_rmse, static)}
        except InputError as err:
            out["pose"] = {"error": str(err)}
    if protocol.depth.align:
        out["depth"] = _depth_prefix(rec, L, protocol)
    if protocol.cloud.enabled:
        out["cloud"] = _cloud_prefix(rec, L, protocol)
    return out


def drift_curves(rec: FrameRecords, protocol: Protocol) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per-frame error curves with alignment on the first n frames, and their drift rates."""
    n_total = len(rec)
    n = min(protocol.pose.drift_align_frames, n_total)
    curves: dict[str, list[float]] = {}
    drift: dict[str, float] = {"align_frames": n}
    if protocol.pose.enabled:
        posed = rec.has_pose
        ate = np.full(n_total, np.nan)
        n_posed = int(posed[:n].sum())
        try:
            ate[posed] = per_frame_ate(rec.est_cam2world[posed], rec.gt_cam2world[posed], protocol.pose.align,
                                       align_first_n=n_posed if protocol.pose.align != "none" else None)
        except InputError as err:
            drift["ate_error"] = str(err)
        curves["ate"] = ate.tolist()
        drift["ate_per_100_frames"] = drift_rate(ate, n)
    if protocol.depth.align:
        curves["abs_rel"] = rec.abs_rel.tolist()
        d = protocol.depth
        fixed = np.full(n_total, np.nan)
        try:
            scale = depth_metrics(rec.pred_samples[:n, None], rec.gt_samples[:n, None], "median_sequence",
                                  d.min_depth, d.max_depth).scale
            m = depth_metrics(rec.pred_samples[:, None] * scale, rec.gt_samples[:, None], "none", d.min_depth,
                              d.max_depth)
            fixed = np.asarray(m.abs_rel_per_frame)
            drift["depth_scale_first_frames"] = float(scale)
        except InputError as err:
            drift["abs_rel_fixed_scale_error"] = str(err)
        curves["abs_rel_fixed_scale"] = fixed.tolist()
        drift["abs_rel_fixed_scale_per_100_frames"] = drift_rate(fixed, n)
    return curves, drift


def check_ground_truth(rec: FrameRecords, protocol: Protocol, name: str) -> None:
    """Raise InputError when the protocol asks for a metric the sequence has no ground truth for."""
    if protocol.depth.align and not rec.depth_pixels.any():
        d = protocol.depth
        cap = "" if d.max_depth is None else f" and < {d.max_depth}"
        raise InputError(
            f"sequence {name}: no valid ground-truth depth in any of its {len(rec)} frames (need depth > "
            f"{d.min_depth}{cap} m); use a sequence with depth or set depth.align: [] in the protocol"
        )
    if protocol.pose.enabled and rec.has_pose.sum() < 3:
        raise InputError(
            f"sequence {name}: {int(rec.has_pose.sum())} of {len(rec)} frames have a ground-truth pose, "
            "ATE needs >= 3; use a sequence with poses or set pose.enabled: false in the protocol"
        )


def evaluate_records(rec: FrameRecords, protocol: Protocol, name: str = "sequence") -> SequenceEvaluation:
    """Prefix metrics for every protocol length, drift curves and rates, from one run's records."""
    check_ground_truth(rec, protocol, name)
    result = SequenceEvaluation(name=name, num_frames=len(rec))
    for L, label in resolve_lengths(protocol.lengths, len(rec)):
        result.prefixes.append({"label": label, **prefix_metrics(rec, L, protocol)})
    result.curves, result.drift = drift_curves(rec, protocol)
    return result


def stream_records(
    model,
    sequence: Sequence,
    protocol: Protocol,
    device: torch.device | str = "cpu",
    trajectory_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    norm_every: int = MEMORY_NORM_EVERY,
) -> tuple[FrameRecords, dict[str, float], dict]:
    """Stream a sequence through a model once (constant memory), recording every frame.

    Args:
        model: a streamrecon model in eval mode (``init_state``, ``step``).
        sequence: frames with ground truth (already frame-selected).
        protocol: supplies fitting policy, intrinsics mode and sample sizes.
        device: the model's device.
        trajectory_path: optional TUM file for the predicted cam2world (written frame by frame).
        progress: called with 1 after every frame.
        norm_every: sample the memory-state norm after every ``norm_every``-th frame.

    Returns:
        (records, timing {fps, latency_ms_median, latency_ms_p95} of the model step and the copy of
        its outputs (``FramePrediction.latency_ms``): frame decoding / rendering and scoring are not
        counted, health: as :attr:`SequenceEvaluation.health`).
    """
    stream = FrameStream(sequence, tuple(model.cfg.image_size), protocol.resize,
                         use_source_K=protocol.intrinsics == "source")
    scorer = GroundTruthScorer(
        protocol.depth.samples_per_frame,
        protocol.cloud.points_per_frame if protocol.cloud.enabled else 0,
        protocol.depth.min_depth,
        protocol.depth.max_depth,
    )
    writer = TumWriter(trajectory_path) if trajectory_path is not None else None
    latencies, norms, nonfinite = [], [], 0
    session = StreamSession(model, device)
    try:
        for pred in session.run(stream):
            latencies.append(pred.latency_ms)
            nonfinite += not (np.isfinite(pred.cam2world).all() and np.isfinite(pred.depth).all())
            if len(latencies) % norm_every == 0:
                norms.append(memory_state_norm(session.state))
            scorer.update(pred)
            if writer is not None:
                writer.write(pred.timestamp, pred.cam2world)
            if progress is not None:
                progress(1)
    finally:
        if writer is not None:
            writer.close()
    lat = np.asarray(latencies) if latencies else np.full(1, np.nan)
    timing = {
        "fps": float(1000.0 / lat.mean()),
        "latency_ms_median": float(np.median(lat)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
    }
    if len(latencies) % norm_every:
        norms.append(memory_state_norm(session.state))
    health = {"nonfinite_frames": int(nonfinite), "memory_norm_every": int(norm_every), "memory_norm": norms,
              "memory_norm_growth": norm_growth(norms)}
    return scorer.records(), timing, health


def records_from_trajectories(ts_est, est, ts_gt, gt, max_dt: float = 0.02) -> FrameRecords:
    """Pose-only records from two timestamped trajectories, paired by nearest timestamp.

    Args:
        ts_est: [N] seconds; est: predicted cam2world [N, 4, 4] (e.g. ``recon run``'s trajectory).
        ts_gt: [M] seconds; gt: ground-truth cam2world [M, 4, 4].
        max_dt: largest accepted time difference (TUM's associate rule).

    Raises:
        InputError: a trajectory and its timestamps differ in length, or no timestamps associate.
    """
    ts, est_m, gt_m = associate_trajectories(ts_est, est, ts_gt, gt, max_dt)
    n = len(ts)
    nan = np.full(n, np.nan)
    return FrameRecords(
        index=np.arange(n), timestamp=ts, est_cam2world=est_m, gt_cam2world=gt_m, abs_rel=nan,
        delta1=nan.copy(), depth_pixels=np.zeros(n, np.int64), depth_scale=nan.copy(),
        pred_samples=np.zeros((n, 0)), gt_samples=np.zeros((n, 0)), pred_points=np.zeros((n, 0, 3)),
        gt_points=np.zeros((n, 0, 3)), point_valid=np.zeros((n, 0), bool),
    )


def evaluate_trajectory(
    ts_est, est, ts_gt, gt, protocol: Protocol, name: str = "trajectory", max_dt: float = 0.02
) -> SequenceEvaluation:
    """Drift evaluation of a saved trajectory (pose metrics only) under a protocol's lengths.

    The estimate's poses are associated to the ground truth by timestamp first; prefixes count
    associated poses.
    """
    records = records_from_trajectories(ts_est, est, ts_gt, gt, max_dt)
    pose_only = replace(
        protocol,
        depth=replace(protocol.depth, align=[]),
        cloud=replace(protocol.cloud, enabled=False),
        pose=replace(protocol.pose, enabled=True),
    )
    return evaluate_records(records, pose_only, name)
