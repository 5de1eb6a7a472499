"""Robust perspective-n-point refinement from an initial pose (torch, batched, deterministic).

Given 3D points ``X`` in a source camera, their observed pixels ``x`` in a target camera, the
target's intrinsics ``K`` and a guess of the rigid transform ``T`` (source camera -> target camera,
``X_target = R X + t``), :func:`refine_pnp` minimises the robust reprojection cost

    sum_i w_i * rho(|pi(K (R X_i + t)) - x_i|),    rho(r) = c^2 / 2 * log(1 + (r / c)^2)   (Cauchy)

by iteratively reweighted Gauss-Newton steps (Levenberg damping) on a left-multiplied se(3)
increment, ``T <- exp(xi) T`` with ``xi = (v, omega)`` and ``exp(xi) P ~ P + v + omega x P``.

Why here and not OpenCV's ``solvePnPRansac``: the stream's pose readout needs one batched,
deterministic function of its inputs, identical in the clip path and the streaming step (RANSAC's
random minimal sets are neither), and it always has a good guess (the odometry). The tests compare
it with ``cv2.solvePnP`` on clean correspondences.
"""

from __future__ import annotations

import torch
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

ITERATIONS = 10
DAMPING = 1e-4


def project(K: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Pixels of camera-frame points: K [B, 3, 3], P [B, N, 3] (z > 0) -> [B, N, 2]."""
    z = P[..., 2:].clamp_min(1e-6)
    uv = P[..., :2] / z
    return uv * torch.stack((K[:, 0, 0], K[:, 1, 1]), -1)[:, None] + K[:, None, :2, 2]


def refine_pnp(X: torch.Tensor, x: torch.Tensor, K: torch.Tensor, init: torch.Tensor,
               weights: torch.Tensor, cauchy_px: float, iterations: int = ITERATIONS
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine the source->target transform of each batch entry.

    Args:
        X: [B, N, 3] points in the source camera (metres; z > 0).
        x: [B, N, 2] observed pixels in the target camera (x, y).
        K: [B, 3, 3] target intrinsics (pixels).
        init: [B, 4, 4] initial source->target transform.
        weights: [B, N] >= 0 prior weight of each correspondence (0 = unused).
        cauchy_px: Cauchy scale c in pixels.
        iterations: reweighted Gauss-Newton steps.

    Returns:
        (T [B, 4, 4] the refined transform, residual [B, N] reprojection error in pixels at T;
         points behind the target camera get an infinite residual).
    """
    dtype = torch.float64
    X, x, K, T, w0 = X.to(dtype), x.to(dtype), K.to(dtype), init.to(dtype).clone(), weights.to(dtype)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    B, N = X.shape[:2]
    eye6 = torch.eye(6, dtype=dtype, device=X.device)
    for _ in range(iterations):
        P = X @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]                      # [B, N, 3]
        r = project(K, P) - x                                                           # [B, N, 2]
        front = P[..., 2] > 1e-3
        w = torch.where(front, w0 / (1.0 + (r.norm(dim=-1) / cauchy_px) ** 2), torch.zeros_like(w0))
        z = P[..., 2].clamp_min(1e-3)
        # d pixel / d P: [[fx/z, 0, -fx X/z^2], [0, fy/z, -fy Y/z^2]]; d P / d xi = [I, -[P]x].
        zero = torch.zeros_like(z)
        dpix = torch.stack((torch.stack((fx / z, zero, -fx * P[..., 0] / z**2), -1),
                            torch.stack((zero, fy / z, -fy * P[..., 1] / z**2), -1)), -2)  # [B, N, 2, 3]
        px, py, pz = P.unbind(-1)
        skew = torch.stack((torch.stack((zero, -pz, py), -1), torch.stack((pz, zero, -px), -1),
                            torch.stack((-py, px, zero), -1)), -2)                      # [P]x
        J = torch.cat((dpix, -dpix @ skew), -1)                                          # [B, N, 2, 6]
        Jw = J * w[..., None, None]
        H = torch.einsum("bnki,bnkj->bij", Jw, J)
        g = torch.einsum("bnki,bnk->bi", Jw, r)
        damp = DAMPING * H.diagonal(dim1=1, dim2=2).mean(-1, keepdim=True)[..., None] + 1e-12
        xi = -torch.linalg.solve(H + damp * eye6, g.unsqueeze(-1)).squeeze(-1)          # [B, 6]
        step = torch.eye(4, dtype=dtype, device=X.device).repeat(B, 1, 1)
        step[:, :3, :3] = axis_angle_to_rotation_matrix(xi[:, 3:])
        step[:, :3, 3] = xi[:, :3]
        T = step @ T
    P = X @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    residual = (project(K, P) - x).norm(dim=-1)
    residual = torch.where(P[..., 2] > 1e-3, residual, torch.full_like(residual, float("inf")))
    return T.to(init.dtype), residual.to(init.dtype)
