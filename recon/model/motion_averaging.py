"""Online motion averaging: a robust fusion of the window's pose candidates for the current frame.

Each earlier frame ``t - j`` of the local window has a fixed absolute pose ``A[t - j]`` and the
camera trunk predicts the current frame's pose in its camera, ``R[t, j]``; so
``C_j = A[t - j] @ R[t, j]`` is a candidate for ``cam2world[t]``. :func:`fuse_pose_candidates`
turns the S candidates into one pose, robust to a bad estimate (HorizonStream takes a median).
Translations (metres) and rotations (unit quaternions w x y z, signs aligned to the newest valid
candidate, i.e. a chordal mean) are each fused by the same M-estimator (:func:`robust_mean`):

- start at the medoid, the candidate with the least summed distance to the others;
- robust scale ``c`` = the median distance of the candidates to the medoid (+ 1e-6);
- iteratively reweighted means with Cauchy weights ``1 / (1 + (d / c)^2)``: a stationary point of
  ``sum_i log(1 + (d_i / c)^2)``, which an estimate many ``c`` away cannot pull.

Non-finite candidates and slots before frame 0 are left out; when no candidate is left the
caller falls back to the previous pose and counts it. Cost: O(S^2) tiny ops per frame, S <= ~10;
differentiable.
"""

from __future__ import annotations

import torch
from kornia.geometry.conversions import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion

ITERATIONS = 8
SCALE_FLOOR = 1e-6


def robust_mean(x: torch.Tensor, valid: torch.Tensor, iterations: int = ITERATIONS) -> torch.Tensor:
    """Cauchy M-estimate of the valid rows of each batch entry.

    Args:
        x: [B, S, D] candidates.
        valid: [B, S] bool (at least one True per row for a meaningful result).
        iterations: reweighting steps.

    Returns:
        [B, D] the estimate (the first row's value where no row is valid).
    """
    B = x.shape[0]
    rows = torch.arange(B, device=x.device)
    dist = torch.cdist(x, x)                                                             # [B, S, S]
    pair = valid.unsqueeze(1) & valid.unsqueeze(2)
    cost = torch.where(pair, dist, torch.zeros_like(dist)).sum(-1)
    medoid = torch.where(valid, cost, torch.full_like(cost, float("inf"))).argmin(dim=1)
    est = x[rows, medoid]
    to_medoid = torch.where(valid, dist[rows, medoid], torch.full_like(cost, float("nan")))
    c = (torch.nan_to_num(to_medoid.nanmedian(dim=1).values, nan=0.0) + SCALE_FLOOR).unsqueeze(1)
    weight_valid = valid.to(x.dtype)
    for _ in range(iterations):
        d = (x - est.unsqueeze(1)).norm(dim=-1)
        w = weight_valid / (1.0 + (d / c) ** 2)
        est = (w.unsqueeze(-1) * x).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-30)
    return est


def fuse_pose_candidates(candidates: torch.Tensor, valid: torch.Tensor,
                         iterations: int = ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Robustly average candidate poses of one frame.

    Args:
        candidates: [B, S, 4, 4] cam2world candidates (slot 0 = from the newest earlier frame).
        valid: [B, S] bool, slots that hold an estimate (frames >= 0).
        iterations: reweighting steps of :func:`robust_mean`.

    Returns:
        (fused [B, 4, 4] cam2world, none_valid [B] bool: rows without any finite candidate, whose
        fused pose is the identity and must be replaced by the caller).
    """
    B = candidates.shape[0]
    valid = valid & torch.isfinite(candidates).flatten(2).all(-1)
    eye = torch.eye(4, dtype=candidates.dtype, device=candidates.device)
    safe = torch.where(valid[..., None, None], candidates, eye)
    q = rotation_matrix_to_quaternion(safe[..., :3, :3].contiguous())            # kornia: (w, x, y, z)
    newest = valid.to(torch.int64).argmax(dim=1)                                 # first valid slot
    ref = q[torch.arange(B, device=q.device), newest]
    q = torch.where((q * ref.unsqueeze(1)).sum(-1, keepdim=True) < 0, -q, q)
    t_hat = robust_mean(safe[..., :3, 3], valid, iterations)
    q_hat = robust_mean(q, valid, iterations)
    q_hat = q_hat / q_hat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    none_valid = ~valid.any(dim=1)
    fused = eye.repeat(B, 1, 1)
    fused[:, :3, :3] = quaternion_to_rotation_matrix(q_hat)
    fused[:, :3, 3] = torch.where(none_valid.unsqueeze(-1), torch.zeros_like(t_hat), t_hat)
    return fused, none_valid
