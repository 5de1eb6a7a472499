"""Sim(3) / SE(3) alignment of point sets (Umeyama 1991), batched, differentiable torch.

Used to align predicted trajectories or point maps (up-to-scale, world = first camera) to ground
truth before measuring error. ``dst ~ s * R @ src + t``.
"""

from __future__ import annotations

import torch

from recon.errors import ShapeError, check_shape

from .poses import pose_from_Rt


def umeyama_sim3(
    src: torch.Tensor,
    dst: torch.Tensor,
    weights: torch.Tensor | None = None,
    with_scale: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity transform mapping ``src`` onto ``dst`` (Umeyama, weighted).

    Minimises ``sum_i w_i ||dst_i - (s R src_i + t)||^2`` over rotations R (det +1: a reflection
    from the SVD is corrected with ``diag(1, 1, sign(det U det V))``), scale s > 0 and t.

    Args:
        src: source points [B, N, 3].
        dst: target points [B, N, 3].
        weights: optional non-negative weights [B, N] (e.g. a validity mask as float).
        with_scale: estimate s (Sim(3)); False fixes s = 1 (SE(3)).

    Returns:
        s [B], R [B, 3, 3], t [B, 3] with ``dst ~ s * (R @ src) + t``.

    Raises:
        ShapeError: on wrong shapes, non-finite values, fewer than 3 weighted points, or a
            degenerate source (all points coincide, so neither rotation nor scale is defined).

    Example:
        >>> src = torch.randn(1, 10, 3, dtype=torch.float64)
        >>> s, R, t = umeyama_sim3(src, 2.0 * src + 1.0)
        >>> round(s.item(), 6)
        2.0
    """
    dims = check_shape(src, "B N 3", "src")
    check_shape(dst, f"{dims['B']} {dims['N']} 3", "dst")
    if weights is None:
        weights = torch.ones(src.shape[:2], dtype=src.dtype, device=src.device)
    check_shape(weights, f"{dims['B']} {dims['N']}", "weights")
    for name, x in (("src", src), ("dst", dst), ("weights", weights)):
        if not torch.isfinite(x).all():
            raise ShapeError(f"umeyama_sim3: {name} has non-finite values")
    if (weights < 0).any():
        raise ShapeError("umeyama_sim3: weights must be >= 0, got negative weights")
    support = (weights > 0).sum(dim=1)
    if support.numel() and support.min().item() < 3:
        raise ShapeError(
            f"umeyama_sim3: expected >= 3 points with weight > 0 per batch item, got {support.tolist()}"
        )

    weights = weights.to(src.dtype)
    w = weights / weights.sum(dim=1, keepdim=True)  # [B, N], sums to 1
    mu_src = (w[..., None] * src).sum(dim=1)  # [B, 3]
    mu_dst = (w[..., None] * dst).sum(dim=1)
    src_c = src - mu_src[:, None]
    dst_c = dst - mu_dst[:, None]
    var_src = (w * (src_c**2).sum(dim=-1)).sum(dim=1)  # [B]
    scale_ref = (w * (src**2).sum(dim=-1)).sum(dim=1).clamp_min(torch.finfo(src.dtype).tiny)
    if (var_src <= torch.finfo(src.dtype).eps * scale_ref).any():
        raise ShapeError("umeyama_sim3: degenerate source, all weighted src points coincide")

    cov = (w[..., None, None] * dst_c[..., :, None] * src_c[..., None, :]).sum(dim=1)  # [B, 3, 3]
    U, D, Vh = torch.linalg.svd(cov)
    # Reflection fix: flip the smallest singular direction when det(U V^T) < 0.
    d = torch.sign(torch.linalg.det(U) * torch.linalg.det(Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    S = torch.ones_like(D)
    S = torch.cat((S[:, :2], d[:, None]), dim=1)  # [B, 3]
    R = U @ (S[..., None] * Vh)
    if with_scale:
        s = (D * S).sum(dim=1) / var_src
    else:
        s = torch.ones_like(var_src)
    t = mu_dst - s[:, None] * (R @ mu_src[..., None]).squeeze(-1)
    return s, R, t


def apply_sim3(s: torch.Tensor, R: torch.Tensor, t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map points by a similarity: ``s * R @ p + t``.

    Args:
        s: scales [B].
        R: rotations [B, 3, 3].
        t: translations [B, 3].
        points: [B, N, 3].

    Returns:
        [B, N, 3].
    """
    dims = check_shape(points, "B N 3", "points")
    check_shape(s, f"{dims['B']}", "s")
    check_shape(R, f"{dims['B']} 3 3", "R")
    check_shape(t, f"{dims['B']} 3", "t")
    return s[:, None, None] * (points @ R.transpose(-1, -2)) + t[:, None]


def sim3_to_matrix(s: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """4x4 matrices [[s R, t], [0, 1]] [B, 4, 4] from s [B], R [B, 3, 3], t [B, 3]."""
    return pose_from_Rt(s[:, None, None] * R, t)


def apply_sim3_to_poses(
    s: torch.Tensor, R: torch.Tensor, t: torch.Tensor, cam2world: torch.Tensor
) -> torch.Tensor:
    """Move camera poses by a world similarity, keeping them rigid.

    The camera centre maps as a point (``s R c + t``) and the orientation rotates (``R R_i``), so
    the result stays a rigid cam2world in the new (scaled) world.

    Args:
        s: [B]; R: [B, 3, 3]; t: [B, 3].
        cam2world: poses [B, T, 4, 4].

    Returns:
        cam2world [B, T, 4, 4] in the target world.
    """
    check_shape(cam2world, "B T 4 4", "cam2world")
    centres = apply_sim3(s, R, t, cam2world[..., :3, 3])
    rotations = R[:, None] @ cam2world[..., :3, :3]
    return pose_from_Rt(rotations, centres)
