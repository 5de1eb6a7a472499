"""Accuracy of a streaming run against ground truth, accumulated frame by frame in O(1) memory
per frame (a pose, a few per-frame numbers and optionally a fixed-size pixel sample per frame),
for sources that carry ground truth.

``recon run`` reads :meth:`GroundTruthScorer.result` (run-level AbsRel / delta1 / ATE / RPE);
``recon eval`` reads :meth:`GroundTruthScorer.records` (per-frame arrays from which every prefix
length and every drift curve is computed after one streaming pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recon.errors import InputError
from recon.eval.depth_metrics import depth_metrics
from recon.eval.pose_metrics import ate_vs_static, pose_baselines, pose_metrics
from recon.geometry import transform_points, unproject_depth
from recon.infer.frames import FramePrediction, SourceFrame


@dataclass
class FrameRecords:
    """Per-frame records of a run (N frames; S depth samples and P point samples per frame).

    Attributes:
        index: [N] frame numbers in the source. timestamp: [N] seconds.
        est_cam2world: [N, 4, 4] predicted poses (model world = first camera, OpenCV).
        gt_cam2world: [N, 4, 4] ground-truth poses (dataset world); NaN where unknown.
        abs_rel, delta1: [N] per-frame depth errors after per-frame median scaling (NaN: no depth).
        depth_pixels: [N] valid ground-truth pixels per frame. depth_scale: [N] median scales.
        pred_samples, gt_samples: [N, S] predicted / ground-truth depth at sampled valid pixels
            (gt 0 = padding: fewer valid pixels than S).
        pred_points, gt_points: [N, P, 3] predicted world points (model world) and ground-truth
            world points (dataset world) at the first P sampled pixels; point_valid [N, P] bool.
    """

    index: np.ndarray
    timestamp: np.ndarray
    est_cam2world: np.ndarray
    gt_cam2world: np.ndarray
    abs_rel: np.ndarray
    delta1: np.ndarray
    depth_pixels: np.ndarray
    depth_scale: np.ndarray
    pred_samples: np.ndarray
    gt_samples: np.ndarray
    pred_points: np.ndarray
    gt_points: np.ndarray
    point_valid: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    @property
    def has_pose(self) -> np.ndarray:
        """[N] bool: frames with a finite ground-truth pose."""
        return np.isfinite(self.gt_cam2world).all(axis=(1, 2))


class GroundTruthScorer:
    """Depth AbsRel / delta<1.25 (per-frame median scale, pixel-weighted over the run) and ATE /
    RPE (Sim(3) Umeyama alignment, evo) of the predictions against the source's ground truth.

    Args:
        depth_samples: valid pixels per frame to keep (0 = none); every valid pixel when a frame
            has fewer, a uniform sample without replacement (fixed seed) otherwise.
        point_samples: of those, how many also keep predicted and ground-truth world points
            (needs the frame's ``gt_K``).
        min_depth, max_depth: valid ground-truth depth range in metres (None = no cap).
        seed: seed of the pixel sampling.
    """

    def __init__(
        self,
        depth_samples: int = 0,
        point_samples: int = 0,
        min_depth: float = 1e-3,
        max_depth: float | None = None,
        seed: int = 0,
    ) -> None:
        if depth_samples < 0 or not 0 <= point_samples <= max(depth_samples, 0):
            raise InputError(
                f"scorer: expected depth_samples >= 0 and 0 <= point_samples <= depth_samples, got "
                f"{depth_samples}, {point_samples}"
            )
        self.depth_samples, self.point_samples = depth_samples, point_samples
        self.min_depth, self.max_depth = min_depth, max_depth
        self._rng = np.random.default_rng(seed)
        self._rows: dict[str, list] = {k: [] for k in FrameRecords.__dataclass_fields__}

    def _depth_row(self, frame: SourceFrame, pred: np.ndarray) -> tuple[float, float, int, float]:
        if frame.gt_depth is None or not (frame.gt_depth > 0).any():
            return np.nan, np.nan, 0, np.nan
        try:
            m = depth_metrics(pred, frame.gt_depth, "median", self.min_depth, self.max_depth)
        except InputError:  # no valid pixel in range: this frame does not count
            return np.nan, np.nan, 0, np.nan
        return m.abs_rel, m.delta1, m.num_pixels, m.scale

    def _samples(self, pred: FramePrediction) -> None:
        frame = pred.frame
        S, P = self.depth_samples, self.point_samples
        pred_s, gt_s = np.zeros(S, np.float32), np.zeros(S, np.float32)
        pred_p, gt_p = np.zeros((P, 3), np.float32), np.zeros((P, 3), np.float32)
        point_ok = np.zeros(P, bool)
        gt = frame.gt_depth
        if gt is not None:
            depth = pred.depth
            upper = np.inf if self.max_depth is None else self.max_depth
            valid = np.isfinite(gt) & (gt > self.min_depth) & (gt < upper) & np.isfinite(depth) & (depth > 0)
            flat = np.flatnonzero(valid)
            if len(flat) > S:
                flat = np.sort(self._rng.choice(flat, S, replace=False))
            pred_s[: len(flat)], gt_s[: len(flat)] = depth.reshape(-1)[flat], gt.reshape(-1)[flat]
            pose = frame.gt_cam2world
            gt_K = frame.gt_K
            if P and gt_K is not None and pose is not None and np.isfinite(pose).all():
                take = flat[:P]
                depth64 = torch.from_numpy(gt.astype(np.float64))
                cam = unproject_depth(depth64, torch.as_tensor(gt_K, dtype=torch.float64))
                world = transform_points(torch.as_tensor(pose, dtype=torch.float64), cam.reshape(-1, 3)[take])
                gt_p[: len(take)] = world.numpy()
                pred_p[: len(take)] = pred.world_points.reshape(-1, 3)[take]
                point_ok[: len(take)] = np.isfinite(pred_p[: len(take)]).all(axis=1)
        for key, value in (("pred_samples", pred_s), ("gt_samples", gt_s), ("pred_points", pred_p),
                           ("gt_points", gt_p), ("point_valid", point_ok)):
            self._rows[key].append(value)

    def update(self, pred: FramePrediction) -> None:
        """Score one frame's prediction (numpy, model resolution) against its frame's ground truth
        (``pred.frame``: depth at model resolution, pose, and ``gt_K`` for ground-truth points).
        """
        frame = pred.frame
        abs_rel, delta1, pixels, scale = self._depth_row(frame, pred.depth)
        gt_pose = frame.gt_cam2world
        if gt_pose is None or not np.isfinite(gt_pose).all():
            gt_pose = np.full((4, 4), np.nan)
        rows = self._rows
        rows["index"].append(frame.index)
        rows["timestamp"].append(frame.timestamp)
        rows["est_cam2world"].append(np.asarray(pred.cam2world, np.float64))
        rows["gt_cam2world"].append(np.asarray(gt_pose, np.float64))
        for key, value in (("abs_rel", abs_rel), ("delta1", delta1), ("depth_pixels", pixels),
                           ("depth_scale", scale)):
            rows[key].append(value)
        self._samples(pred)

    def records(self) -> FrameRecords:
        """The per-frame records so far as arrays."""
        n = len(self._rows["index"])
        S, P = self.depth_samples, self.point_samples
        empty = {
            "est_cam2world": (0, 4, 4), "gt_cam2world": (0, 4, 4), "pred_samples": (0, S),
            "gt_samples": (0, S), "pred_points": (0, P, 3), "gt_points": (0, P, 3), "point_valid": (0, P),
        }
        arrays = {}
        for key, values in self._rows.items():
            arrays[key] = np.stack(values) if n and key in empty else np.asarray(values)
            if not n and key in empty:
                arrays[key] = np.zeros(empty[key], bool if key == "point_valid" else np.float64)
        arrays["depth_pixels"] = arrays["depth_pixels"].astype(np.int64)
        return FrameRecords(**arrays)

    def result(self) -> dict:
        """Metrics so far (keys absent when the source had no depth / poses).

        Returns:
            ``depth``: ``abs_rel``, ``delta1``, ``align``, ``pixels``; ``pose`` (>= 3 frames with a
            ground-truth pose): ``ate_rmse``, ``rpe_trans_rmse``, ``rpe_rot_rmse_deg``,
            ``sim3_scale`` (the scale the Sim(3) alignment applies to the predicted trajectory),
            the baselines ``static_ate_rmse`` and ``constant_velocity_ate_rmse``
            (``recon.eval.pose_metrics.pose_baselines``, Sim(3)), ``ate_vs_static`` (None when the
            true camera does not move), ``align``, ``frames``; ``error`` replaces the model's
            numbers when its trajectory cannot be aligned.
        """
        res: dict = {}
        rec = self.records()
        pixels = int(rec.depth_pixels.sum())
        if pixels:
            has = rec.depth_pixels > 0
            weights = rec.depth_pixels[has]
            res["depth"] = {
                "abs_rel": float((rec.abs_rel[has] * weights).sum() / pixels),
                "delta1": float((rec.delta1[has] * weights).sum() / pixels),
                "align": "median per frame",
                "pixels": pixels,
            }
        has_pose = rec.has_pose
        if has_pose.sum() >= 3:
            gt = rec.gt_cam2world[has_pose]
            try:
                baselines = pose_baselines(gt, align="sim3")
            except InputError as err:  # e.g. a ground-truth pose that is not rigid
                res["pose"] = {"error": str(err), "align": "sim3", "frames": int(has_pose.sum())}
                return res
            try:
                pm = pose_metrics(rec.est_cam2world[has_pose], gt, align="sim3")
            except InputError as err:  # e.g. predicted camera centres that all coincide: Sim(3) is undefined
                res["pose"] = {"error": str(err), **baselines, "align": "sim3", "frames": int(has_pose.sum())}
                return res
            res["pose"] = {
                "ate_rmse": pm.ate_rmse,
                "rpe_trans_rmse": pm.rpe_trans_rmse,
                "rpe_rot_rmse_deg": pm.rpe_rot_rmse_deg,
                "sim3_scale": pm.scale,
                **baselines,
                "ate_vs_static": ate_vs_static(pm.ate_rmse, baselines["static_ate_rmse"]),
                "align": "sim3",
                "frames": pm.num_poses,
            }
        return res
