"""Training losses: pure functions of the model output dict and a clip batch.

Conventions (shared design, conventions.md): OpenCV camera (x right, y down, z forward), ``cam2world``
4x4, metres, ``K`` 3x3 pixels. Model outputs live in the world of the clip's first camera; the
batch's ground-truth poses live in the dataset's world, so :func:`gt_relative_to_first` moves them
(and the ground-truth point maps) into the first camera's frame before any comparison.

Scale: a monocular clip fixes geometry only up to scale, so depth, point maps and camera
translations are compared after dividing each side (prediction and ground truth separately) by its
own scene scale, the mean distance of its valid points from the first camera (as DUSt3R / VGGT do).
The optional metric-scale loss then ties the predicted scale to the true one on datasets with
metric depth.

Confidence: the depth / point terms are weighted by the model's confidence ``c >= 1`` with the
regulariser ``- alpha * log c`` (DUSt3R), so the model may down-weight pixels it cannot get right
but pays for doing so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recon.geometry import relative_pose, transform_points, unproject_depth
from recon.model.pose_enc import intrinsics_to_fov

_EPS = 1e-6


@dataclass
class LossConfig:
    """Weights and options of :func:`reconstruction_loss`.

    Attributes:
        depth: weight of the confidence-weighted normalised depth regression.
        points: weight of the confidence-weighted normalised point-map regression (first-camera frame).
        camera_translation: weight of the L1 on scale-normalised translations.
        camera_rotation: weight of the geodesic rotation angle (radians).
        camera_fov: weight of the L1 on the fields of view (radians).
        conf_alpha: ``alpha`` of the confidence regulariser ``- alpha * log c``.
        gradient: weight of the depth-gradient loss (0 = off).
        metric_scale: weight of the metric-scale loss ``|log s_pred - log s_gt|`` (0 = off).
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


def scene_scale(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean distance from the origin (the first camera) of the valid points of each clip.

    Args:
        points: [B, T, H, W, 3].
        valid: [B, T, H, W] bool.

    Returns:
        [B] scales (clamped to >= 1e-6; clips with no valid point get 1).
    """
    w = valid.to(points.dtype)
    dist = points.norm(dim=-1)
    total = (dist * w).flatten(1).sum(1)
    count = w.flatten(1).sum(1)
    scale = torch.where(count > 0, total / count.clamp_min(1.0), torch.ones_like(total))
    return scale.clamp_min(_EPS)


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


def rotation_geodesic(R_pred: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of ``R_pred^T R_gt``, computed as ``atan2(|axis|, trace - 1)`` (stable near 0 and pi).

    Args:
        R_pred, R_gt: [..., 3, 3] rotations.

    Returns:
        [...] angles in [0, pi].
    """
    M = R_pred.transpose(-1, -2) @ R_gt
    trace = M.diagonal(dim1=-2, dim2=-1).sum(-1)
    skew = torch.stack((M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0],
                        M[..., 1, 0] - M[..., 0, 1]), dim=-1)
    # |skew| = 2 sin(theta), trace - 1 = 2 cos(theta); the epsilon keeps the norm's gradient finite at 0.
    sin2 = torch.sqrt((skew * skew).sum(-1) + 1e-20)
    return torch.atan2(sin2, trace - 1.0)


def reconstruction_loss(pred: dict[str, torch.Tensor], batch: dict, cfg: LossConfig,
                        first_cam2world: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All training terms for one clip batch.

    Args:
        pred: model outputs: ``depth`` [B, T, H, W] (> 0), ``depth_conf`` [B, T, H, W] (>= 1),
            ``world_points`` [B, T, H, W, 3] (first-camera world), ``cam2world`` [B, T, 4, 4]
            (first-camera world), ``pose_enc`` [B, T, 9] (translation, quat wxyz, fov_h, fov_w).
        batch: ``depth`` [B, T, H, W] metres (0 invalid), ``K`` [B, T, 3, 3] pixels, ``cam2world``
            [B, T, 4, 4] (dataset world), ``dataset`` list[str] of length B.
        cfg: weights.
        first_cam2world: [B, 4, 4] dataset-world pose of the camera that defines the model's world
            (default: the batch's frame 0). Truncated backprop passes the clip's first pose for
            every later segment, whose own frame 0 is then not the identity.

    Returns:
        dict of scalars: ``loss`` (the weighted total to minimise) and each unweighted term
        (``depth``, ``points``, ``gradient``, ``camera_translation``, ``camera_rotation``,
        ``camera_fov``, ``metric_scale``), plus ``scale_ratio`` (predicted / true scene scale, a
        diagnostic).
    """
    gt_depth = batch["depth"].to(pred["depth"].dtype)
    B, T, H, W = gt_depth.shape
    K_gt = batch["K"].to(gt_depth.dtype)
    reference = batch["cam2world"][:, :1] if first_cam2world is None else first_cam2world[:, None]
    rel = relative_pose(reference.double(), batch["cam2world"].double()).to(gt_depth.dtype)
    valid = gt_depth > 0
    enough = valid.flatten(1).sum(1) >= cfg.min_valid_pixels                              # [B]
    valid = valid & enough.view(B, 1, 1, 1)

    gt_points = gt_points_first_camera(gt_depth, K_gt, rel)
    s_gt = scene_scale(gt_points, valid)                                                  # [B]
    s_pred = scene_scale(pred["world_points"], valid)
    conf = pred["depth_conf"]
    norm_gt = (1.0 / s_gt).view(B, 1, 1, 1)
    norm_pred = (1.0 / s_pred).view(B, 1, 1, 1)

    depth_gt_n, depth_pred_n = gt_depth * norm_gt, pred["depth"] * norm_pred
    terms: dict[str, torch.Tensor] = {}
    terms["depth"] = confidence_weighted_l1(depth_pred_n - depth_gt_n, conf, valid, cfg.conf_alpha)
    terms["points"] = confidence_weighted_l1(
        pred["world_points"] * norm_pred[..., None] - gt_points * norm_gt[..., None], conf, valid,
        cfg.conf_alpha)
    terms["gradient"] = (depth_gradient_loss(depth_pred_n, depth_gt_n, valid) if cfg.gradient > 0
                         else gt_depth.new_zeros(()))

    # Cameras: the reference frame is the identity on both sides, so only later frames carry signal.
    # Clips without enough depth normalise translations by their mean camera distance instead.
    first = 1 if first_cam2world is None else 0
    if T > first:
        t_pred, t_gt = pred["cam2world"][:, first:, :3, 3], rel[:, first:, :3, 3]
        cam_pred = t_pred.norm(dim=-1).mean(1).clamp_min(_EPS)
        cam_gt = t_gt.norm(dim=-1).mean(1).clamp_min(_EPS)
        t_pred = t_pred / torch.where(enough, s_pred, cam_pred).view(B, 1, 1)
        t_gt = t_gt / torch.where(enough, s_gt, cam_gt).view(B, 1, 1)
        terms["camera_translation"] = (t_pred - t_gt).norm(dim=-1).mean()
        terms["camera_rotation"] = rotation_geodesic(
            pred["cam2world"][:, first:, :3, :3], rel[:, first:, :3, :3]).mean()
    else:
        terms["camera_translation"] = terms["camera_rotation"] = gt_depth.new_zeros(())
    fov_h, fov_w = intrinsics_to_fov(K_gt, H, W)
    fov_pred = pred["pose_enc"][..., 7:9]
    terms["camera_fov"] = ((fov_pred[..., 0] - fov_h).abs() + (fov_pred[..., 1] - fov_w).abs()).mean()

    is_metric = [not cfg.metric_datasets or name in cfg.metric_datasets for name in batch["dataset"]]
    metric = torch.tensor(is_metric, device=gt_depth.device) & enough
    if cfg.metric_scale > 0 and metric.any():
        log_ratio = (torch.log(s_pred) - torch.log(s_gt)).abs()
        terms["metric_scale"] = log_ratio[metric].mean()
    else:
        terms["metric_scale"] = gt_depth.new_zeros(())

    total = (cfg.depth * terms["depth"] + cfg.points * terms["points"] + cfg.gradient * terms["gradient"]
             + cfg.camera_translation * terms["camera_translation"]
             + cfg.camera_rotation * terms["camera_rotation"] + cfg.camera_fov * terms["camera_fov"]
             + cfg.metric_scale * terms["metric_scale"])
    terms["scale_ratio"] = (s_pred / s_gt).detach().mean()
    return {"loss": total, **terms}
