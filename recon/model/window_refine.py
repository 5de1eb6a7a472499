"""Geometric refinement of the camera trunk's window poses against the pair flow (inference).

The camera trunk reads each window pose ``R[t, j]`` (frame t in the camera of frame ``t - j``)
from learned features; the rotation it reads scales with the field of view it assumed, and the
trunk never sees the intrinsics. The pair motion encoder already measured, for each (t, t - j)
pair, a Lucas-Kanade flow on its cell grid; with frame t's predicted depth and the intrinsics,
every textured cell is a 3D point in camera t and its pixel in frame ``t - j``
(:func:`recon.model.cell_matches.flow_correspondences`). A robust reprojection fit
(:func:`recon.geometry.pnp.refine_pnp`, Cauchy scale ``inlier_px``) started at the trunk's pose
gives the geometric pose. It replaces the trunk's where the fit is verified:

- at least ``min_inliers`` cells and ``min_inlier_fraction`` of the textured cells within
  ``inlier_px`` of their match;
- its change from the trunk's pose within ``max_shift`` (times frame t's median depth) and
  ``max_turn_deg``: the fit refines an estimate, it does not replace a wild one;
- finite.

Everything runs in the model's unit scale (the depth and the trunk's translations both before the
metric scale), per frame and without state, so the clip path and the streaming step agree. No
gradient: the fit has no parameters, and training (which has no dense depth of every frame)
runs without it, so the trunk still learns the poses the fit starts from.

Self-calibration (:func:`calibrate_focal`, when no intrinsics are given): every
``focal_every``-th frame fits each pair's pose with the focal length as a seventh parameter and
streams the evidence into the focal length of ``K`` (the fits above then use it).

Cost per frame: one S-pair batched Gauss-Newton fit of ``iterations`` 6 x 6 steps over the
grid's cells (192 for ``tiny``), plus a 7 x 7 one on every ``focal_every``-th frame; the flow is
the encoder's (1.16x the model step without it, ``tools/bench/bench_refine.py``).
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.conversions import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion

from recon.geometry import pose_from_Rt, rotation_geodesic
from recon.geometry.pnp import refine_pnp, refine_pnp_focal
from recon.model.cell_matches import flow_correspondences
from recon.model.config import RefineConfig


class _PairFit:
    """The fit problem of every (t, t - j) pair of M frames (M * S pairs, frame-major): cell points
    X in camera t and their pixels x in frame t - j, the usable cells, the intrinsics K, the
    trunk's pose as the start (camera t -> camera t - j: the window pose itself) and frame t's
    median depth; see :func:`refine_window_poses` for the arguments."""

    def __init__(self, flow_out: torch.Tensor, motion_size: tuple[int, int], unit_depth: torch.Tensor,
                 K: torch.Tensor, translation: torch.Tensor, quat_wxyz: torch.Tensor, pool: int) -> None:
        S = translation.shape[1]
        depth = unit_depth.detach().float()
        self.K = K.detach().float().repeat_interleave(S, 0)                          # [M * S, 3, 3]
        self.X, self.x, self.usable = flow_correspondences(flow_out.float(), motion_size,
                                                           depth.repeat_interleave(S, 0), self.K, pool)
        self.init = pose_from_Rt(quaternion_to_rotation_matrix(quat_wxyz.detach().float()),
                                 translation.detach().float()).flatten(0, 1)
        self.scale = depth.flatten(1).median(1).values.clamp_min(1e-6).repeat_interleave(S, 0)

    def verified(self, fit: torch.Tensor, residual: torch.Tensor, cfg: RefineConfig) -> torch.Tensor:
        """[M * S] bool: enough inlier cells, a bounded change from the start, a finite pose."""
        inliers = (self.usable & (residual < cfg.inlier_px)).sum(1)
        fraction = inliers / self.usable.sum(1).clamp_min(1)
        shift = (fit[:, :3, 3] - self.init[:, :3, 3]).norm(dim=-1) / self.scale
        turn = torch.rad2deg(rotation_geodesic(fit[:, :3, :3], self.init[:, :3, :3]))
        return ((inliers >= cfg.min_inliers) & (fraction >= cfg.min_inlier_fraction)
                & (shift <= cfg.max_shift) & (turn <= cfg.max_turn_deg)
                & torch.isfinite(fit).flatten(1).all(1))


def refine_window_poses(flow_out: torch.Tensor, motion_size: tuple[int, int], unit_depth: torch.Tensor,
                        K: torch.Tensor, translation: torch.Tensor, quat_wxyz: torch.Tensor, pool: int,
                        cfg: RefineConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine the window poses of M frames.

    Args:
        flow_out: [M * S, 2 + L, gh, gw] the pair motion encoder's Lucas-Kanade output of
            (frame t, frame t - j), frame-major then slot.
        motion_size: (h, w) of the motion frames.
        unit_depth: [M, H, W] frame t's depth in unit scale.
        K: [M, 3, 3] frame t's intrinsics (model pixels); the fit uses them for both frames.
        translation: [M, S, 3] the trunk's window translations (unit scale).
        quat_wxyz: [M, S, 4] the trunk's window rotations.
        pool: model pixels per motion pixel.
        cfg: the settings.

    Returns:
        (translation [M, S, 3], quaternion wxyz [M, S, 4] with w >= 0: the fit where accepted,
         the trunk's elsewhere; accepted [M, S] bool).
    """
    M, S = translation.shape[:2]
    with torch.no_grad():
        pairs = _PairFit(flow_out, motion_size, unit_depth, K, translation, quat_wxyz, pool)
        fit, residual = refine_pnp(pairs.X, pairs.x, pairs.K, pairs.init, pairs.usable.float(),
                                   cfg.inlier_px, cfg.iterations)
        accept = pairs.verified(fit, residual, cfg).view(M, S)
        q = rotation_matrix_to_quaternion(fit[:, :3, :3].contiguous()).view(M, S, 4)
        q = torch.where(q[..., :1] < 0, -q, q)
        t = fit[:, :3, 3].view(M, S, 3)
    translation = torch.where(accept[..., None], t.to(translation.dtype), translation)
    quat = torch.where(accept[..., None], q.to(quat_wxyz.dtype), quat_wxyz)
    return translation, quat, accept


def focal_evidence(flow_out: torch.Tensor, motion_size: tuple[int, int], unit_depth: torch.Tensor,
                   K: torch.Tensor, translation: torch.Tensor, quat_wxyz: torch.Tensor, pool: int,
                   cfg: RefineConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """What the window's flow says about the focal length, per frame (self-calibration).

    Each (t, t - j) pair gets a fit of its pose and a log focal scale ``kappa``
    (:func:`recon.geometry.pnp.refine_pnp_focal`, started at the trunk's pose and ``K``); a pair
    counts when its fit passes the checks of :func:`refine_window_poses` and ``|kappa| <=
    log(cfg.max_focal_ratio)``. The frame's evidence is the information-weighted mean of its
    pairs' ``kappa`` (a rotation shows the focal length in how the flow bends toward the image
    edges; a translation alone does not, and its information is ~0).

    Args: as :func:`refine_window_poses`.

    Returns:
        (log_focal [M]: ``log(fx) + kappa`` of the frame, pixels; information [M] >= 0, the sum
         over the counted pairs (0: no evidence, ``log_focal`` is then ``log(fx)``)).
    """
    M, S = translation.shape[:2]
    with torch.no_grad():
        pairs = _PairFit(flow_out, motion_size, unit_depth, K, translation, quat_wxyz, pool)
        fit, kappa, info, residual = refine_pnp_focal(pairs.X, pairs.x, pairs.K, pairs.init,
                                                      pairs.usable.float(), cfg.inlier_px, cfg.iterations)
        counts = (pairs.verified(fit, residual, cfg) & (kappa.abs() <= math.log(cfg.max_focal_ratio))
                  & torch.isfinite(kappa) & torch.isfinite(info))
        weight = torch.where(counts, info, torch.zeros_like(info)).view(M, S)
        kappa = torch.where(counts, kappa, torch.zeros_like(kappa)).view(M, S)
        total = weight.sum(1)
        mean = (weight * kappa).sum(1) / total.clamp_min(1e-12)
    return torch.log(K[:, 0, 0].detach().float()) + mean, total


def calibrate_focal(flow_out: torch.Tensor, motion_size: tuple[int, int], unit_depth: torch.Tensor,
                    K: torch.Tensor, translation: torch.Tensor, quat_wxyz: torch.Tensor, pool: int,
                    evidence_log: torch.Tensor, evidence_info: torch.Tensor, frame_index: int,
                    cfg: RefineConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Self-calibrate the focal length over the stream, frame by frame.

    Every ``cfg.focal_every``-th frame n (``n % focal_every == 0``; the focal length of a video
    changes slowly if at all) measures :func:`focal_evidence` (its fits start at the focal length
    known before it), which joins
    an information-weighted mean with forgetting (``I_n = d I_{n-1} + i_n``,
    ``L_n = (d I_{n-1} L_{n-1} + i_n l_n) / I_n`` over the measured frames,
    ``d = (1 - 1 / cfg.focal_memory) ^ focal_every``); every frame's
    focal length is that mean pulled toward its predicted ``fx`` by a prior of information
    ``cfg.focal_prior``: ``log f_n = (I_n L_n + p log fx_n) / (I_n + p)``. fx and fy are scaled
    together, the principal point kept; frame n uses frames <= n only, one frame at a time, so the
    clip path and the streaming step agree.

    Args:
        flow_out, motion_size, unit_depth, translation, quat_wxyz, pool: as
            :func:`refine_window_poses`, for the T frames of B sequences (M = B * T, frame-major).
        K: [B, T, 3, 3] the predicted intrinsics.
        evidence_log, evidence_info: [B] the accumulated ``L`` and ``I`` before the first frame
            (0 and 0 before frame 0).
        frame_index: absolute index of the first of the T frames.
        cfg: the settings.

    Returns:
        (K [B, T, 3, 3] calibrated, evidence_log [B], evidence_info [B] after the last frame).
    """
    B, T = K.shape[:2]
    S = translation.shape[1]
    decay = (1.0 - 1.0 / cfg.focal_memory) ** cfg.focal_every     # per measurement
    flow_out = flow_out.view(B, T, S, *flow_out.shape[1:])
    depth, trans, quat = (x.view(B, T, *x.shape[1:]) for x in (unit_depth, translation, quat_wxyz))
    L, I = evidence_log.float(), evidence_info.float()
    calibrated = []
    for t in range(T):
        predicted = torch.log(K[:, t, 0, 0].float())                               # [B]
        if (frame_index + t) % cfg.focal_every == 0:
            known = focal_estimate(L, I, predicted, cfg.focal_prior)             # before frame t
            start = _scale_focal(K[:, t], torch.exp(known - predicted))
            log_focal, information = focal_evidence(flow_out[:, t].flatten(0, 1), motion_size, depth[:, t],
                                                    start, trans[:, t], quat[:, t], pool, cfg)
            L, I = accumulate_focal(L, I, log_focal, information, decay)
        gain = torch.exp(focal_estimate(L, I, predicted, cfg.focal_prior) - predicted)
        calibrated.append(_scale_focal(K[:, t], gain))
    return torch.stack(calibrated, 1), L, I


def accumulate_focal(L: torch.Tensor, I: torch.Tensor, log_focal: torch.Tensor, information: torch.Tensor,
                     decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame of the forgetting information-weighted mean: (L, I) [B] and the frame's evidence
    (log_focal, information) [B] -> the new (L, I); L is kept where no information was ever seen."""
    carried = decay * I
    total = carried + information
    weighted = torch.where(information > 0, information * log_focal, torch.zeros_like(log_focal))
    return torch.where(total > 0, (carried * L + weighted) / total.clamp_min(1e-12), L), total


def focal_estimate(L: torch.Tensor, I: torch.Tensor, predicted: torch.Tensor, prior: float) -> torch.Tensor:
    """The log focal length [B]: the evidence mean L (information I) and the predicted log fx
    (information ``prior``) combined."""
    return (I * L + prior * predicted) / (I + prior)


def _scale_focal(K: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """K [B, 3, 3] with fx and fy times ``gain`` [B] (out of place: K may carry a gradient)."""
    focal = torch.zeros_like(K)
    focal[:, 0, 0] = focal[:, 1, 1] = 1.0
    return K * (1.0 + focal * (gain.to(K.dtype) - 1.0)[:, None, None])
