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

Self-calibration (:func:`self_calibrate`): every ``focal_every``-th frame fits each pair's pose
with two more parameters, the focal length (when no intrinsics are given) and the contrast of the
predicted depth (its log spread around the median, raised by ``e^c``: the tiny model's depth head
predicts near and far about a third as different as they are, and a fit on that depth explains
the missing parallax with a wrong focal length), and streams the evidence into an information
filter; the output ``K`` gets the focal length, the fits above the depth at that contrast (the
output depth stays the predicted one).

Cost per frame: one S-pair batched Gauss-Newton fit of ``iterations`` 6 x 6 steps over the
grid's cells (192 for ``tiny``), plus an 8 x 8 one on every ``focal_every``-th frame; the flow is
the encoder's (1.14x the model step without it, ``tools/bench/bench_refine.py``, session 10).
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.conversions import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion

from recon.geometry import pose_from_Rt, rotation_geodesic
from recon.geometry.pnp import refine_pnp, refine_pnp_calibrate
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


def contrast_depth(depth: torch.Tensor, log_contrast: torch.Tensor) -> torch.Tensor:
    """Depth [M, H, W] with its contrast around each frame's median ``m`` raised by
    ``e^log_contrast`` [M]: ``m (d / m)^(e^log_contrast)`` (0: the depth itself)."""
    median = depth.flatten(1).median(1).values.clamp_min(1e-6)[:, None, None]
    gamma = torch.exp(log_contrast.to(depth.dtype))[:, None, None]
    return median * (depth.clamp_min(1e-6) / median) ** gamma


def calibration_evidence(flow_out: torch.Tensor, motion_size: tuple[int, int], unit_depth: torch.Tensor,
                         K: torch.Tensor, log_contrast: torch.Tensor, translation: torch.Tensor,
                         quat_wxyz: torch.Tensor, pool: int, cfg: RefineConfig, fit_focal: bool = True,
                         fit_contrast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """What the window's flow says about the focal length and the depth's contrast, per frame.

    Each (t, t - j) pair gets a fit of its pose, a log focal scale ``kappa`` and a log contrast
    step ``eta`` (:func:`recon.geometry.pnp.refine_pnp_calibrate`, started at the trunk's pose,
    ``K`` and the depth at contrast ``log_contrast``); a pair counts when its fit passes the
    checks of :func:`refine_window_poses`, ``|kappa| <= log(cfg.max_focal_ratio)`` and ``|eta|
    <= log(cfg.max_contrast_ratio)``. The frame's evidence is its pairs' information matrices and
    information vectors summed (a rotation shows the focal length in how the flow bends toward the
    image edges, a translation the depth's contrast in its parallax).

    Args:
        flow_out, motion_size, unit_depth, translation, quat_wxyz, pool, cfg: as
            :func:`refine_window_poses`.
        K: [M, 3, 3] the intrinsics the fits start at.
        log_contrast: [M] the depth contrast the fits start at (:func:`contrast_depth`).
        fit_focal, fit_contrast: which of the two to fit (the other keeps zero information).

    Returns:
        (information [M, 2, 2] of (log focal length in pixels, log contrast), information vector
         [M, 2]: information times the pairs' absolute estimates ``(log fx + kappa, log_contrast
         + eta)``; zero without evidence).
    """
    M, S = translation.shape[:2]
    with torch.no_grad():
        depth = contrast_depth(unit_depth.detach().float(), log_contrast)
        pairs = _PairFit(flow_out, motion_size, depth, K, translation, quat_wxyz, pool)
        ratio = torch.log(pairs.X[..., 2].clamp_min(1e-6) / pairs.scale[:, None]) if fit_contrast else None
        fit, theta, info, residual = refine_pnp_calibrate(pairs.X, pairs.x, pairs.K, pairs.init,
                                                          pairs.usable.float(), cfg.inlier_px,
                                                          cfg.iterations, ratio, fit_focal)
        counts = (pairs.verified(fit, residual, cfg)
                  & (theta[:, 0].abs() <= math.log(cfg.max_focal_ratio))
                  & (theta[:, 1].abs() <= math.log(cfg.max_contrast_ratio))
                  & torch.isfinite(theta).all(1) & torch.isfinite(info).flatten(1).all(1))
        info = torch.where(counts[:, None, None], info, torch.zeros_like(info))
        start = torch.stack((torch.log(K[:, 0, 0].detach().float()), log_contrast.float()), -1)
        theta = torch.where(counts[:, None], theta, torch.zeros_like(theta))
        absolute = start.repeat_interleave(S, 0) + theta
        vector = (info @ absolute[..., None])[..., 0]
    return info.view(M, S, 2, 2).sum(1), vector.view(M, S, 2).sum(1)


def self_calibrate(flow_out: torch.Tensor, motion_size: tuple[int, int], unit_depth: torch.Tensor,
                   K: torch.Tensor, translation: torch.Tensor, quat_wxyz: torch.Tensor, pool: int,
                   information: torch.Tensor, vector: torch.Tensor, frame_index: int, cfg: RefineConfig,
                   fit_focal: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Self-calibrate the focal length and the depth's contrast over the stream, frame by frame.

    Every ``cfg.focal_every``-th frame n (``n % focal_every == 0``; both change slowly if at all)
    measures :func:`calibration_evidence` (its fits start at the estimate before frame n), which
    joins an information filter with forgetting over the measured frames, ``I_n = d I_{n-1} +
    i_n``, ``h_n = d h_{n-1} + v_n`` (``d = (1 - 1 / cfg.focal_memory) ^ focal_every``); every
    frame's estimate combines it with a prior: ``(log f_n, c_n) = (I_n + P)^-1 (h_n + P mu_n)``,
    ``P = diag(cfg.focal_prior, cfg.contrast_prior)``, ``mu_n = (log fx_n predicted, 0)``. fx and
    fy are scaled together, the principal point kept; frame n uses frames <= n only, one frame at a
    time, so the clip path and the streaming step agree.

    Args:
        flow_out, motion_size, unit_depth, translation, quat_wxyz, pool: as
            :func:`refine_window_poses`, for the T frames of B sequences (M = B * T, frame-major).
        K: [B, T, 3, 3] the predicted (or given) intrinsics.
        information, vector: [B, 2, 2] and [B, 2], the filter before the first frame (zeros
            before frame 0).
        frame_index: absolute index of the first of the T frames.
        cfg: the settings (``cfg.calibrate_contrast``: fit the contrast too).
        fit_focal: fit the focal length (False: ``K`` is known and returned as given).

    Returns:
        (K [B, T, 3, 3] calibrated, log_contrast [B, T] for :func:`contrast_depth`, information
         [B, 2, 2], vector [B, 2] after the last frame).
    """
    B, T = K.shape[:2]
    S = translation.shape[1]
    decay = (1.0 - 1.0 / cfg.focal_memory) ** cfg.focal_every     # per measurement
    flow_out = flow_out.view(B, T, S, *flow_out.shape[1:])
    depth, trans, quat = (x.view(B, T, *x.shape[1:]) for x in (unit_depth, translation, quat_wxyz))
    I, h = information.float(), vector.float()
    prior = torch.diag(torch.tensor([cfg.focal_prior, cfg.contrast_prior], device=I.device))
    calibrated, contrast = [], []
    for t in range(T):
        mu = torch.stack((torch.log(K[:, t, 0, 0].float()), torch.zeros(B, device=I.device)), -1)
        if (frame_index + t) % cfg.focal_every == 0:
            known = calibration_estimate(I, h, mu, prior)                       # before frame t
            start = _scale_focal(K[:, t], torch.exp(known[:, 0] - mu[:, 0]))
            i, v = calibration_evidence(flow_out[:, t].flatten(0, 1), motion_size, depth[:, t], start,
                                        known[:, 1], trans[:, t], quat[:, t], pool, cfg, fit_focal,
                                        cfg.calibrate_contrast)
            I, h = decay * I + i, decay * h + v
        estimate = calibration_estimate(I, h, mu, prior)
        gain = torch.exp(estimate[:, 0] - mu[:, 0])
        calibrated.append(_scale_focal(K[:, t], gain) if fit_focal else K[:, t])
        contrast.append(estimate[:, 1])
    return torch.stack(calibrated, 1), torch.stack(contrast, 1), I, h


def calibration_estimate(information: torch.Tensor, vector: torch.Tensor, mu: torch.Tensor,
                         prior: torch.Tensor) -> torch.Tensor:
    """The (log focal length, log contrast) [B, 2] of an information filter ([B, 2, 2], [B, 2])
    combined with a prior of mean ``mu`` [B, 2] and information ``prior`` [2, 2] (positive
    definite, so the estimate is defined before any evidence: it is ``mu``)."""
    rhs = vector + mu @ prior.T
    return torch.linalg.solve_ex(information + prior, rhs[..., None])[0][..., 0]


def _scale_focal(K: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """K [B, 3, 3] with fx and fy times ``gain`` [B] (out of place: K may carry a gradient)."""
    focal = torch.zeros_like(K)
    focal[:, 0, 0] = focal[:, 1, 1] = 1.0
    return K * (1.0 + focal * (gain.to(K.dtype) - 1.0)[:, None, None])
