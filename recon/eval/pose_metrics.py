"""Trajectory metrics: ATE after Sim(3) / SE(3) / no alignment, RPE, per-frame drift curves.

Poses are cam2world 4x4 (any camera convention, the same for both trajectories), matched by
index: associate timestamps first (:func:`associate_trajectories`). Alignment is Umeyama on camera
centres (:func:`recon.geometry.umeyama_sim3`, optionally on the first ``n`` frames only, so later
drift is not hidden by the fit); the error statistics are evo's (``APE`` on the translation part,
``RPE`` on translation and rotation angle over a frame delta).

Two reference trajectories built from the ground truth put a model's ATE in context
(:func:`pose_baselines`, reported beside every ATE by ``recon eval`` and ``recon run``):

- **static camera** (:func:`static_camera_ate`): every frame keeps the first ground-truth pose.
  Its camera centres all coincide, so Umeyama is degenerate; its ATE is the limit of the best fit
  instead, in closed form. With ``sim3`` / ``se3`` alignment the best placement of one point is the
  centroid of the ground-truth centres the alignment is fitted on, so ATE = RMS distance of the
  ground-truth centres from that centroid; with ``none`` it stays at the first ground-truth centre.
  Under ``sim3`` on the whole trajectory this is also the error of the scale -> 0 limit of any
  estimate, so a model's ATE can never exceed it: ``ate_vs_static`` (model ATE / static ATE) is in
  [0, 1], 1 meaning "no better than not moving" (often with a Sim(3) scale near 0: a trajectory
  collapsed to a point).
- **constant velocity** (:func:`constant_velocity_trajectory`): a camera that keeps its initial
  motion, ``P_k = P_0 D^k`` with ``D = P_0^-1 P_1`` from the first two ground-truth poses (a causal
  predictor that knows frames 0 and 1), aligned and scored exactly like the model's trajectory.
  It is exact (ATE 0) on ground truth that moves with constant velocity (a line, a circle, a helix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from evo.core.metrics import APE, RPE, PoseRelation, StatisticsType, Unit
from evo.core.trajectory import PosePath3D

from recon.errors import InputError, ReconError
from recon.geometry import apply_sim3_to_poses, check_pose, umeyama_sim3
from recon.trajectory import associate_timestamps

ALIGN_MODES = ("sim3", "se3", "none")


@dataclass
class PoseMetrics:
    """Trajectory errors (units of the ground truth; rotations in degrees).

    Attributes:
        ate_rmse, ate_mean, ate_median, ate_max: absolute translation error of camera centres
            after alignment.
        rpe_trans_rmse: RMSE of the relative translation error over ``rpe_delta`` frames.
        rpe_rot_rmse_deg: RMSE of the relative rotation angle over ``rpe_delta`` frames.
        scale: scale applied to the estimate by the alignment (1 for se3 / none).
        align: alignment mode; align_frames: frames used to fit it; num_poses; rpe_delta.
    """

    ate_rmse: float
    ate_mean: float
    ate_median: float
    ate_max: float
    rpe_trans_rmse: float
    rpe_rot_rmse_deg: float
    scale: float
    align: str
    align_frames: int
    num_poses: int
    rpe_delta: int

    def to_dict(self) -> dict:
        return asdict(self)


def _as_poses(x, name: str) -> np.ndarray:
    T = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)
    try:
        check_pose(torch.as_tensor(T), name)
    except ReconError as err:
        raise InputError(str(err)) from err
    if T.ndim != 3:
        raise InputError(f"{name}: expected a trajectory [N, 4, 4], got shape {list(T.shape)}")
    return T


def align_trajectory(
    est, gt, align: str = "sim3", align_first_n: int | None = None
) -> tuple[np.ndarray, float]:
    """Align an estimated trajectory to the ground truth by Umeyama on camera centres.

    Args:
        est: estimated cam2world [N, 4, 4] (numpy or torch).
        gt: ground-truth cam2world [N, 4, 4].
        align: "sim3" (rotation, translation, scale), "se3" (no scale) or "none".
        align_first_n: fit the alignment on the first n frames only (None = all); n >= 3.

    Returns:
        (aligned est cam2world float64 [N, 4, 4] in gt's world, the scale applied).

    Raises:
        InputError: different lengths, bad mode, too few frames, or static camera centres.
    """
    est, gt = _as_poses(est, "estimated poses"), _as_poses(gt, "ground-truth poses")
    if est.shape != gt.shape:
        raise InputError(
            f"trajectories of different lengths: estimate has {len(est)} poses, ground truth {len(gt)} "
            "(associate timestamps first)"
        )
    if align not in ALIGN_MODES:
        raise InputError(f"align: expected one of {ALIGN_MODES}, got {align!r}")
    if align == "none":
        return est, 1.0
    n = len(est) if align_first_n is None else int(align_first_n)
    if not 3 <= n <= len(est):
        raise InputError(f"align_first_n: expected 3 <= n <= {len(est)} poses, got {n}")
    src = torch.as_tensor(est[None, :n, :3, 3])
    dst = torch.as_tensor(gt[None, :n, :3, 3])
    try:
        s, R, t = umeyama_sim3(src, dst, with_scale=align == "sim3")
    except ReconError as err:
        raise InputError(
            f"cannot align trajectories ({err}); the camera centres of the first {n} frames must not "
            "all coincide (use align='none' for static cameras)"
        ) from err
    aligned = apply_sim3_to_poses(s, R, t, torch.as_tensor(est)[None])[0]
    return aligned.numpy(), float(s.item())


def static_camera_trajectory(gt) -> np.ndarray:
    """The static-camera baseline: every frame's cam2world is the first ground-truth pose [N, 4, 4]."""
    gt = _as_poses(gt, "ground-truth poses")
    return np.repeat(gt[:1], len(gt), axis=0)


def constant_velocity_trajectory(gt) -> np.ndarray:
    """The constant-velocity baseline: ``P_k = P_0 D^k`` with ``D = P_0^-1 P_1`` [N, 4, 4].

    A camera that keeps the relative motion (in its own frame) of the first two ground-truth
    poses for the whole sequence; ``D^k`` in closed form (rotation vector times k, translation
    summed), so its rotations stay orthonormal over any length.

    Args:
        gt: ground-truth cam2world [N, 4, 4], N >= 2 (frames in evaluation order).

    Returns:
        float64 cam2world [N, 4, 4] in the ground truth's world; frames 0 and 1 equal the truth.
    """
    from scipy.spatial.transform import Rotation

    gt = _as_poses(gt, "ground-truth poses")
    if len(gt) < 2:
        raise InputError(f"constant velocity: expected >= 2 ground-truth poses, got {len(gt)}")
    D = np.linalg.inv(gt[0]) @ gt[1]
    rotvec = Rotation.from_matrix(D[:3, :3]).as_rotvec()
    k = np.arange(len(gt), dtype=np.float64)
    R_k = Rotation.from_rotvec(k[:, None] * rotvec).as_matrix()  # D_R^k
    steps = R_k @ D[:3, 3]  # D_R^j t_D
    rel = np.tile(np.eye(4), (len(gt), 1, 1))
    rel[:, :3, :3] = R_k
    rel[1:, :3, 3] = np.cumsum(steps[:-1], axis=0)  # t_k = sum_{j<k} D_R^j t_D
    return gt[0] @ rel


def static_camera_ate(gt, align: str = "sim3", align_first_n: int | None = None) -> float:
    """ATE RMSE of the static-camera baseline (closed form; see the module docstring).

    Args:
        gt: ground-truth cam2world [N, 4, 4] (numpy or torch).
        align: the alignment the compared ATE uses: ``sim3`` / ``se3`` (the constant trajectory is
            placed at the centroid of the fitted ground-truth centres) or ``none`` (it stays at the
            first ground-truth centre).
        align_first_n: the alignment is fitted on the first n frames only (None = all).

    Returns:
        RMS distance of every ground-truth camera centre from that placement (metres).
    """
    centres = _as_poses(gt, "ground-truth poses")[:, :3, 3]
    if align not in ALIGN_MODES:
        raise InputError(f"align: expected one of {ALIGN_MODES}, got {align!r}")
    if len(centres) == 0:
        raise InputError("static camera: expected at least one ground-truth pose")
    if align == "none":
        ref = centres[0]
    else:
        n = len(centres) if align_first_n is None else int(align_first_n)
        if not 1 <= n <= len(centres):
            raise InputError(f"align_first_n: expected 1 <= n <= {len(centres)} poses, got {n}")
        ref = centres[:n].mean(axis=0)
    return float(np.sqrt(((centres - ref) ** 2).sum(axis=1).mean()))


def constant_velocity_ate(gt, align: str = "sim3", align_first_n: int | None = None) -> float:
    """ATE RMSE of the constant-velocity baseline under the same alignment as the model.

    When the first two ground-truth centres coincide (no initial translation) the baseline's
    centres all coincide too, its alignment is degenerate, and its ATE is the static camera's.
    """
    cv = constant_velocity_trajectory(gt)
    try:
        err = per_frame_ate(cv, gt, align, align_first_n)
    except InputError:
        centres = cv[: len(cv) if align_first_n is None else int(align_first_n), :3, 3]
        if np.ptp(centres, axis=0).max() > 1e-9 * (1.0 + np.abs(centres).max()):
            raise
        return static_camera_ate(gt, align, align_first_n)
    return float(np.sqrt(np.mean(err**2)))


def pose_baselines(gt, align: str = "sim3", align_first_n: int | None = None) -> dict[str, float]:
    """ATE RMSE of both baselines: ``{"static_ate_rmse", "constant_velocity_ate_rmse"}`` (metres)."""
    return {
        "static_ate_rmse": static_camera_ate(gt, align, align_first_n),
        "constant_velocity_ate_rmse": constant_velocity_ate(gt, align, align_first_n),
    }


def ate_vs_static(ate: float, static_ate: float) -> float | None:
    """Model ATE / static-camera ATE; None when the ground-truth camera does not move (static 0)."""
    return float(ate / static_ate) if static_ate > 0 and np.isfinite(ate) else None


def per_frame_ate(est, gt, align: str = "sim3", align_first_n: int | None = None) -> np.ndarray:
    """Camera-centre error of every frame [N] after alignment (a drift curve with align_first_n)."""
    aligned, _ = align_trajectory(est, gt, align, align_first_n)
    ape = APE(PoseRelation.translation_part)
    ape.process_data((PosePath3D(poses_se3=list(_as_poses(gt, "gt"))), PosePath3D(poses_se3=list(aligned))))
    return np.asarray(ape.error, dtype=np.float64)


def pose_metrics(
    est, gt, align: str = "sim3", align_first_n: int | None = None, rpe_delta: int = 1
) -> PoseMetrics:
    """ATE and RPE of an estimated trajectory against the ground truth (same length, same order).

    Args:
        est: estimated cam2world [N, 4, 4].
        gt: ground-truth cam2world [N, 4, 4].
        align: "sim3", "se3" or "none" (metric poses in gt's world).
        align_first_n: fit the alignment on the first n frames only.
        rpe_delta: frame distance of the RPE pairs (i, i + delta).

    Returns:
        :class:`PoseMetrics`.
    """
    aligned, scale = align_trajectory(est, gt, align, align_first_n)
    if not 1 <= rpe_delta < len(aligned):
        raise InputError(f"rpe_delta: expected 1 <= delta < {len(aligned)} poses, got {rpe_delta}")
    ref = PosePath3D(poses_se3=list(_as_poses(gt, "gt")))
    est_path = PosePath3D(poses_se3=list(aligned))
    ape = APE(PoseRelation.translation_part)
    ape.process_data((ref, est_path))
    rpe = {}
    for key, relation in (("trans", PoseRelation.translation_part), ("rot", PoseRelation.rotation_angle_deg)):
        metric = RPE(relation, delta=rpe_delta, delta_unit=Unit.frames, all_pairs=False)
        metric.process_data((ref, est_path))
        rpe[key] = float(metric.get_statistic(StatisticsType.rmse))
    return PoseMetrics(
        ate_rmse=float(ape.get_statistic(StatisticsType.rmse)),
        ate_mean=float(ape.get_statistic(StatisticsType.mean)),
        ate_median=float(ape.get_statistic(StatisticsType.median)),
        ate_max=float(ape.get_statistic(StatisticsType.max)),
        rpe_trans_rmse=rpe["trans"],
        rpe_rot_rmse_deg=rpe["rot"],
        scale=scale,
        align=align,
        align_frames=0 if align == "none" else (align_first_n or len(aligned)),
        num_poses=len(aligned),
        rpe_delta=rpe_delta,
    )


def associate_trajectories(
    ts_est, est, ts_gt, gt, max_diff: float = 0.02
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair poses of two timestamped trajectories by nearest timestamp (TUM associate rule).

    Args:
        ts_est: [N] seconds; est: cam2world [N, 4, 4]; ts_gt: [M] seconds; gt: cam2world [M, 4, 4].
        max_diff: largest accepted time difference in seconds.

    Returns:
        (timestamps [K] of the estimate, est [K, 4, 4], gt [K, 4, 4]) for the K matched pairs.

    Raises:
        InputError: when a trajectory and its timestamps disagree in length or nothing matches.
    """
    est = np.asarray(est, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    ts_est = np.asarray(ts_est, dtype=np.float64).reshape(-1)
    ts_gt = np.asarray(ts_gt, dtype=np.float64).reshape(-1)
    for name, ts, T in (("estimate", ts_est, est), ("ground truth", ts_gt, gt)):
        if len(ts) != len(T):
            raise InputError(f"{name}: {len(ts)} timestamps but {len(T)} poses")
    idx_est, idx_gt = associate_timestamps(ts_est, ts_gt, max_diff)
    return ts_est[idx_est], est[idx_est], gt[idx_gt]
