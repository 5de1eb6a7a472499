"""Training losses: pure functions of the model output dict and a clip batch.

Conventions (docs/conventions.md): OpenCV camera (x right, y down, z forward), ``cam2world``
4x4, metres, ``K`` 3x3 pixels. Model outputs live in the world of the clip's first camera; the
batch's ground-truth poses live in the dataset's world, so :func:`gt_relative_to_first` moves them
(and the ground-truth point maps) into the first camera's frame before any comparison.

Scale: a monocular clip fixes geometry only up to scale, so depth, point maps and camera
translations are compared after dividing each side (prediction and ground truth separately) by its
own scale, the mean depth over the valid pixels of the clip (or segment). The metric-scale loss
then ties the predicted scale (the metric readout token's, which multiplies depth and every
translation) to the true one on datasets with metric depth.

Poses: the camera trunk's window poses are trained on every pair (t, t - j) of the local window
(translation + geodesic rotation); the motion-averaged absolute poses optionally too.

Confidence: the depth / point terms are weighted by the model's confidence ``c >= 1`` with the
regulariser ``- alpha * log c`` (DUSt3R), so the model may down-weight pixels it cannot get right
but pays for doing so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from recon.geometry import relative_pose, rotation_geodesic, transform_points, unproject_depth
from recon.model.pose_enc import intrinsics_to_fov
from recon.model.readout import slot_frame_index

_EPS = 1e-6


@dataclass
class LossConfig:
    """Weights and options of :func:`reconstruction_loss`.

    Attributes:
        depth: weight of the confidence-weighted normalised depth regression.
        points: weight of the confidence-weighted normalised point-map regression (first-camera frame).
        camera_translation: weight of the L2 distance of scale-normalised slot translations, over
            every pair (t, t - d) of the pose slots (window and long) whose older frame is in the clip.
        camera_rotation: weight of the geodesic angle (radians) of the slot rotations.
        camera_absolute: weight of the same two errors on the motion-averaged absolute poses
            against the ground truth relative to the clip's first camera (0 = off).
        camera_fov: weight of the L1 on the fields of view (radians).
        conf_alpha: ``alpha`` of the confidence regulariser ``- alpha * log c``.
        gradient: weight of the depth-gradient loss (0 = off).
        metric_scale: weight of the metric-scale loss ``|log s_pred - log s_gt|`` on the mean depth
            over valid pixels, which ties the metric readout token to metres (0 = off).
        metric_datasets: datasets whose depth is metric (the metric-scale loss applies to them only);
            empty = every dataset in the batch.
        min_valid_pixels: clips with fewer valid depth pixels than this are left out of the depth /
            point / scale terms (their scale is undefined); their translations are normalised by the
            mean camera distance from the first camera instead.
    """

    depth: float = 1.0
    points: float = 1.0
    camera_translation: float = 1.0
    camera_rotation: float = 1.0
    camera_absolute: float = 0.0
    camera_fov: float = 0.5
    conf_alpha: float = 0.2
    gradient: float = 0.5
    metric_scale: float = 0.0
    metric_datasets: list[str] = field(default_factory=list)
    min_valid_pixels: int = 16


def gt_relative_to_first(cam2world: torch.Tensor) -> torch.Tensor:
    """Ground-truth poses in the frame of the clip's first camera.

    Args:
        cam2world: [B, T, 4, 4] camera-to-world in the dataset's world (OpenCV cameras).

    Returns:
        [B, T, 4, 4] camera-to-first-camera, ``inv(cam2world[:, :1]) @ cam2world``; frame 0 is I.
    """
    return relative_pose(cam2world[:, :1].double(), cam2world.double()).to(cam2world.dtype)


def gt_points_first_camera(depth: torch.Tensor, K: torch.Tensor, rel_cam2world: torch.Tensor) -> torch.Tensor:
    """Ground-truth point maps in the first camera's frame.

    Args:
        depth: [B, T, H, W] metres (0 = invalid).
        K: [B, T, 3, 3] pixels.
        rel_cam2world: [B, T, 4, 4] from :func:`gt_relative_to_first`.

    Returns:
        [B, T, H, W, 3] metres (invalid pixels land on their camera centre; mask them).
    """
    B, T, H, W = depth.shape
    cam = unproject_depth(depth, K).reshape(B, T, H * W, 3)
    return transform_points(rel_cam2world, cam).reshape(B, T, H, W, 3)


def confidence_weighted_l1(residual: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor,
                           alpha: float) -> torch.Tensor:
    """Mean over valid pixels of ``c * |r| - alpha * log c``.

    Args:
        residual: [B, T, H, W] or [B, T, H, W, 3] (the L2 norm over the last axis is used for 3-vectors).
        conf: [B, T, H, W] confidence >= 1.
        valid: [B, T, H, W] bool.
        alpha: regulariser weight.

    Returns:
        scalar (0 when no pixel is valid).
    """
    err = residual.norm(dim=-1) if residual.dim() == conf.dim() + 1 else residual.abs()
    per_pixel = conf * err - alpha * torch.log(conf)
    per_pixel = torch.where(valid, per_pixel, torch.zeros_like(per_pixel))
    return per_pixel.sum() / valid.sum().clamp_min(1)


def depth_gradient_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 between the finite-difference gradients (x and y) of two depth maps, where both pixels are valid.

    Args:
        pred, gt: [B, T, H, W] (normalised) depths.
        valid: [B, T, H, W] bool.

    Returns:
        scalar (0 when no neighbouring pair is valid).
    """
    terms, count = pred.new_zeros(()), pred.new_zeros(())
    for dim in (-1, -2):
        n = pred.shape[dim]
        a, b = (lambda x, d=dim, n=n: x.narrow(d, 1, n - 1)), (lambda x, d=dim, n=n: x.narrow(d, 0, n - 1))
        pair = a(valid) & b(valid)
        diff = (a(pred) - b(pred)) - (a(gt) - b(gt))
        terms = terms + torch.where(pair, diff.abs(), torch.zeros_like(diff)).sum()
        count = count + pair.sum()
    return terms / count.clamp_min(1)


def mean_depth(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean depth over the valid pixels of each clip: depth, valid [B, T, H, W] -> [B] (>= 1e-6; 1 if none).
    """
    w = valid.to(depth.dtype)
    count = w.flatten(1).sum(1)
    total = (depth * w).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.ones_like(total)).clamp_min(_EPS)


def window_pairs_gt(cam2world: torch.Tensor, previous: torch.Tensor | None,
                    slots: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth of the slot poses of a segment.

    Args:
        cam2world: [B, T, 4, 4] the segment's poses (dataset world).
        previous: [B, Q, 4, 4] poses of the Q frames just before the segment (oldest first), or None.
        slots: S (the window slots, offsets ``1 .. S``) or the P slot offsets.

    Returns:
        (rel [B, T, P, 4, 4]: slot k = ``inv(cam2world[t - d]) @ cam2world[t]``, ``d = offsets[k]``;
         valid [T, P] bool: frame ``t - d`` exists in the clip).
    """
    P = 0 if previous is None else previous.shape[1]
    poses = cam2world if previous is None else torch.cat((previous.to(cam2world.dtype), cam2world), 1)
    T = cam2world.shape[1]
    index = slot_frame_index(T, slots, P, poses.device)
    valid = index >= 0
    older = poses[:, index.clamp_min(0)]                                               # [B, T, S, 4, 4]
    current = cam2world[:, :, None].expand_as(older)
    return relative_pose(older.double(), current.double()).to(cam2world.dtype), valid


def reconstruction_loss(pred: dict[str, torch.Tensor], batch: dict, cfg: LossConfig,
                        first_cam2world: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All training terms for one clip batch (or one segment of it).

    Args:
        pred: model outputs: ``depth`` [B, T, H, W] (> 0), ``depth_conf`` [B, T, H, W] (>= 1),
            ``world_points`` [B, T, H, W, 3] (first-camera world) (T' frames and the indices
            ``dense_frames`` [T'] when the model ran its dense head on a subset), ``cam2world`` [B, T, 4, 4]
            (first-camera world, motion-averaged), ``window_cam2world`` [B, T, P, 4, 4] (frame t
            in the camera of frame t - d per slot), ``pose_enc`` [B, T, 9] (its last two: fov_h, fov_w).
        batch: ``depth`` [B, T, H, W] metres (0 invalid), ``K`` [B, T, 3, 3] pixels, ``cam2world``
            [B, T, 4, 4] (dataset world), ``dataset`` list[str] of length B; optionally
            ``previous_cam2world`` [B, Q, 4, 4], the poses of the Q frames before this segment
            (oldest first), so slot pairs reaching back across a segment boundary are trained, and
            ``slot_offsets``, the offsets d of the P slots (default ``1 .. P``, window slots only).
        cfg: weights.
        first_cam2world: [B, 4, 4] dataset-world pose of the camera that defines the model's world
            (default: the batch's frame 0). Truncated backprop passes the clip's first pose for
            every later segment, whose own frame 0 is then not the identity.

    Returns:
        dict of scalars: ``loss`` (the weighted total to minimise) and each unweighted term
        (``depth``, ``points``, ``gradient``, ``camera_translation``, ``camera_rotation`` (window
        pairs), ``camera_absolute``, ``camera_fov``, ``metric_scale``), plus ``scale_ratio``
        (predicted / true mean depth, a diagnostic).
    """
    # The dense terms use the frames the dense head ran on (all, or ``pred["dense_frames"]``).
    dense = pred.get("dense_frames", slice(None))
    gt_depth = batch["depth"][:, dense].to(pred["depth"].dtype)
    B, _, H, W = gt_depth.shape
    T = batch["cam2world"].shape[1]
    K_gt = batch["K"].to(gt_depth.dtype)
    reference = batch["cam2world"][:, :1] if first_cam2world is None else first_cam2world[:, None]
    rel = relative_pose(reference.double(), batch["cam2world"].double()).to(gt_depth.dtype)
    valid = gt_depth > 0
    enough = valid.flatten(1).sum(1) >= cfg.min_valid_pixels                              # [B]
    valid = valid & enough.view(B, 1, 1, 1)

    gt_points = gt_points_first_camera(gt_depth, K_gt[:, dense], rel[:, dense])
    s_gt = mean_depth(gt_depth, valid)                                                    # [B]
    s_pred = mean_depth(pred["depth"], valid)
    conf = pred["depth_conf"]
    norm_gt = (1.0 / s_gt).view(B, 1, 1, 1)
    norm_pred = (1.0 / s_pred).view(B, 1, 1, 1)

    depth_gt_n, depth_pred_n = gt_depth * norm_gt, pred["depth"] * norm_pred
    terms: dict[str, torch.Tensor] = {}
    zero = gt_depth.new_zeros(())
    terms["depth"] = confidence_weighted_l1(depth_pred_n - depth_gt_n, conf, valid, cfg.conf_alpha)
    terms["points"] = confidence_weighted_l1(
        pred["world_points"] * norm_pred[..., None] - gt_points * norm_gt[..., None], conf, valid,
        cfg.conf_alpha)
    terms["gradient"] = depth_gradient_loss(depth_pred_n, depth_gt_n, valid) if cfg.gradient > 0 else zero

    # Slot pairs (t, t - d): translations in each side's normalised scale, geodesic rotation.
    # Clips without enough depth normalise translations by their mean pair distance instead.
    window = pred["window_cam2world"]
    gt_win, pair_valid = window_pairs_gt(batch["cam2world"], batch.get("previous_cam2world"),
                                         batch.get("slot_offsets", window.shape[2]))
    if pair_valid.any():
        mask = pair_valid.view(1, T, -1).expand(B, -1, -1).to(gt_depth.dtype)           # [B, T, S]
        count = mask.sum((1, 2)).clamp_min(1.0)
        t_pred, t_gt = window[..., :3, 3], gt_win[..., :3, 3]
        pair_pred = ((t_pred.norm(dim=-1) * mask).sum((1, 2)) / count).clamp_min(_EPS)
        pair_gt = ((t_gt.norm(dim=-1) * mask).sum((1, 2)) / count).clamp_min(_EPS)
        t_pred = t_pred / torch.where(enough, s_pred, pair_pred).view(B, 1, 1, 1)
        t_gt = t_gt / torch.where(enough, s_gt, pair_gt).view(B, 1, 1, 1)
        per_pair = (t_pred - t_gt).norm(dim=-1)
        terms["camera_translation"] = (per_pair * mask).sum() / mask.sum()
        angle = rotation_geodesic(window[..., :3, :3], gt_win[..., :3, :3])
        terms["camera_rotation"] = (angle * mask).sum() / mask.sum()
    else:
        terms["camera_translation"] = terms["camera_rotation"] = zero

    # Motion-averaged absolute poses vs the ground truth relative to the reference camera.
    first = 1 if first_cam2world is None else 0
    if cfg.camera_absolute > 0 and T > first:
        t_pred, t_gt = pred["cam2world"][:, first:, :3, 3], rel[:, first:, :3, 3]
        cam_pred = t_pred.norm(dim=-1).mean(1).clamp_min(_EPS)
        cam_gt = t_gt.norm(dim=-1).mean(1).clamp_min(_EPS)
        t_pred = t_pred / torch.where(enough, s_pred, cam_pred).view(B, 1, 1)
        t_gt = t_gt / torch.where(enough, s_gt, cam_gt).view(B, 1, 1)
        terms["camera_absolute"] = ((t_pred - t_gt).norm(dim=-1).mean() + rotation_geodesic(
            pred["cam2world"][:, first:, :3, :3], rel[:, first:, :3, :3]).mean())
    else:
        terms["camera_absolute"] = zero
    fov_h, fov_w = intrinsics_to_fov(K_gt, H, W)
    fov_pred = pred["pose_enc"][..., 7:9]
    terms["camera_fov"] = ((fov_pred[..., 0] - fov_h).abs() + (fov_pred[..., 1] - fov_w).abs()).mean()

    # The metric readout: the predicted mean depth (depth = unit depth x s) against the true one.
    is_metric = [not cfg.metric_datasets or name in cfg.metric_datasets for name in batch["dataset"]]
    metric = torch.tensor(is_metric, device=gt_depth.device) & enough
    if cfg.metric_scale > 0 and metric.any():
        log_ratio = (torch.log(s_pred) - torch.log(s_gt)).abs()
        terms["metric_scale"] = log_ratio[metric].mean()
    else:
        terms["metric_scale"] = zero

    total = (cfg.depth * terms["depth"] + cfg.points * terms["points"] + cfg.gradient * terms["gradient"]
             + cfg.camera_translation * terms["camera_translation"]
             + cfg.camera_rotation * terms["camera_rotation"]
             + cfg.camera_absolute * terms["camera_absolute"] + cfg.camera_fov * terms["camera_fov"]
             + cfg.metric_scale * terms["metric_scale"])
    terms["scale_ratio"] = (s_pred / s_gt).detach().mean()
    return {"loss": total, **terms}
