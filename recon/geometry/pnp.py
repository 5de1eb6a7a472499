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


def _se3_step(xi: torch.Tensor) -> torch.Tensor:
    """[B, 6] increments (v, omega) -> [B, 4, 4] rigid steps ``[[exp([omega]x), v], [0, 1]]``."""
    step = torch.zeros(xi.shape[0], 4, 4, dtype=xi.dtype, device=xi.device)
    step[:, :3, :3] = axis_angle_to_rotation_matrix(xi[:, 3:])
    step[:, :3, 3] = xi[:, :3]
    step[:, 3, 3] = 1.0
    return step


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
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]                                        # [B, 1]
    eye6 = torch.eye(6, dtype=dtype, device=X.device)
    for _ in range(iterations):
        P = X @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]                      # [B, N, 3]
        z = P[..., 2].clamp_min(1e-3)
        a, b, inv_z = P[..., 0] / z, P[..., 1] / z, 1.0 / z                             # normalised
        r = torch.stack((fx * a, fy * b), -1) + K[:, None, :2, 2] - x                  # [B, N, 2]
        w = torch.where(P[..., 2] > 1e-3, w0 / (1.0 + (r.norm(dim=-1) / cauchy_px) ** 2),
                        torch.zeros_like(w0))
        # d pixel / d xi for xi = (v, omega), dP = v + omega x P (the closed form of
        # [[fx/z, 0, -fx X/z^2], [0, fy/z, -fy Y/z^2]] @ [I, -[P]x]), rows u then v: [B, N, 2, 6].
        zero = torch.zeros_like(z)
        J = torch.stack((
            torch.stack((inv_z, zero, -a * inv_z, -a * b, 1.0 + a * a, -b), -1) * fx[..., None],
            torch.stack((zero, inv_z, -b * inv_z, -(1.0 + b * b), a * b, a), -1) * fy[..., None]), -2)
        J, r = J.flatten(1, 2), r.flatten(1)                                            # [B, 2N, 6], [B, 2N]
        Jw = J * w.repeat_interleave(2, dim=1)[..., None]
        H = Jw.transpose(1, 2) @ J                                                      # [B, 6, 6]
        g = (Jw.transpose(1, 2) @ r[..., None])                                         # [B, 6, 1]
        damp = DAMPING * H.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None] + 1e-12
        xi = -torch.linalg.solve(H + damp * eye6, g)[..., 0]                            # [B, 6]
        T = _se3_step(xi) @ T
    P = X @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    residual = (project(K, P) - x).norm(dim=-1)
    residual = torch.where(P[..., 2] > 1e-3, residual, torch.full_like(residual, float("inf")))
    return T.to(init.dtype), residual.to(init.dtype)
