"""Accuracy of a streaming run against ground truth, accumulated frame by frame in O(1) memory
per frame (a pose per frame, running sums for depth), for sources that carry ground truth."""

from __future__ import annotations

import numpy as np

from recon.errors import InputError
from recon.eval.depth_metrics import depth_metrics
from recon.eval.pose_metrics import pose_metrics
from recon.infer.runner import SourceFrame


class GroundTruthScorer:
    """Depth AbsRel / delta<1.25 (per-frame median scale, pixel-weighted over the run) and ATE /
    RPE (Sim(3) Umeyama alignment, evo) of the predictions against the source's ground truth."""

    def __init__(self) -> None:
        self._depth_sums = np.zeros(2)  # sum of abs_rel * n, delta1 * n
        self._depth_pixels = 0
        self._est: list[np.ndarray] = []
        self._gt: list[np.ndarray] = []

    def update(self, frame: SourceFrame, out: dict[str, np.ndarray]) -> None:
        """Score one frame's outputs (numpy, model resolution) against ``frame``'s ground truth."""
        if frame.gt_depth is not None and (frame.gt_depth > 0).any():
            try:
                m = depth_metrics(out["depth"], frame.gt_depth, align="median")
            except InputError:  # no valid pixel in range: this frame does not count
                m = None
            if m is not None:
                n = m.num_pixels
                self._depth_sums += np.array([m.abs_rel, m.delta1]) * n
                self._depth_pixels += n
        if frame.gt_cam2world is not None and np.isfinite(frame.gt_cam2world).all():
            self._est.append(out["cam2world"].astype(np.float64))
            self._gt.append(frame.gt_cam2world.astype(np.float64))

    def result(self) -> dict:
        """Metrics so far (keys absent when the source had no depth / poses)."""
        res: dict = {}
        if self._depth_pixels:
            abs_rel, delta1 = self._depth_sums / self._depth_pixels
            res["depth"] = {
                "abs_rel": float(abs_rel),
                "delta1": float(delta1),
                "align": "median per frame",
                "pixels": int(self._depth_pixels),
            }
        if len(self._est) >= 3:
            try:
                pm = pose_metrics(np.stack(self._est), np.stack(self._gt), align="sim3")
            except InputError as err:  # e.g. a static ground-truth camera: Sim(3) is undefined
                res["pose"] = {"error": str(err)}
                return res
            res["pose"] = {
                "ate_rmse": pm.ate_rmse,
                "rpe_trans_rmse": pm.rpe_trans_rmse,
                "rpe_rot_rmse_deg": pm.rpe_rot_rmse_deg,
                "align": "sim3",
                "frames": pm.num_poses,
            }
        return res
