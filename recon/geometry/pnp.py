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

ITERATIONS = 10
DAMPING = 1e-4


def project(K: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Pixels of camera-frame points: K [B, 3, 3], P [B, N, 3] (z > 0) -> [B, N, 2]."""
    z = P[..., 2:].clamp_min(1e-6)
    uv = P[..., :2] / z
    return uv * torch.stack((K[:, 0, 0], K[:, 1, 1]), -1)[:, None] + K[:, None, :2, 2]


def _se3_step(xi: torch.Tensor) -> torch.Tensor:
    """[B, 6] increments (v, omega) -> [B, 4, 4] rigid steps ``[[exp([omega]x), v], [0, 1]]``.

    Rodrigues' formula ``I + A [w]x + B [w]x^2`` with ``A = sin(t) / t``, ``B = (1 - cos t) / t^2``
    (their series below t = 1e-4), in a dozen batched ops: the fits call it every iteration.
    """
    w = xi[:, 3:]
    theta2 = (w * w).sum(-1)
    theta = theta2.sqrt()
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    A = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    B = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / (safe * safe))
    zero = torch.zeros_like(theta)
    wx, wy, wz = w.unbind(-1)
    skew = torch.stack((zero, -wz, wy, wz, zero, -wx, -wy, wx, zero), -1).view(-1, 3, 3)
    step = torch.zeros(xi.shape[0], 4, 4, dtype=xi.dtype, device=xi.device)
    step[:, :3, :3] = (torch.eye(3, dtype=xi.dtype, device=xi.device) + A[:, None, None] * skew
                       + B[:, None, None] * (skew @ skew))
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
    T, _, _, residual = _gauss_newton(X, x, K, init, weights, cauchy_px, iterations, None, False)
    return T, residual


def refine_pnp_calibrate(X: torch.Tensor, x: torch.Tensor, K: torch.Tensor, init: torch.Tensor,
                         weights: torch.Tensor, cauchy_px: float, iterations: int = ITERATIONS,
                         depth_log_ratio: torch.Tensor | None = None, fit_focal: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine the transform of one camera seen twice, with its focal length and the contrast of
    the depth its points were made with (self-calibration).

    The source and target are the same camera (a video): ``X`` are its rays times depth,
    ``X = d * K^-1 (u, 1)``. Two calibration parameters join the six of the pose:

    - ``kappa``, the log focal scale (``f = f_K * exp(kappa)``, fx and fy together, principal
      point fixed): it moves the points too, ``X(kappa) = (X_x e^-kappa, X_y e^-kappa, X_z)``.
      A rotation shows the focal length in how the flow bends toward the image edges; a
      translation alone does not (its information is then ~0).
    - ``eta``, the log contrast of the depth (``depth_log_ratio`` given: ``l_i = log(d_i / m)``,
      the log of each point's depth over a reference such as the frame's median): the depth
      becomes ``m (d / m)^(e^eta)``, so ``X(eta) = X exp((e^eta - 1) l)``. A depth predicted
      with too little contrast (near and far too alike) shows in the parallax of a translation.

    Args:
        X, x, K, init, weights, cauchy_px, iterations: as :func:`refine_pnp` (``K`` the
            intrinsics ``X`` was unprojected with, the start of the focal fit).
        depth_log_ratio: [B, N] ``l`` above; None: the depth is kept (``eta`` stays 0).
        fit_focal: fit ``kappa`` (False: the focal length of ``K`` is kept, ``kappa`` stays 0).

    Returns:
        (T [B, 4, 4], theta [B, 2] the fitted (kappa, eta) (0 where not fitted), information
         [B, 2, 2]: the Schur complement of the pose in the weighted Gauss-Newton matrix at the
         solution, the inverse covariance of theta in pixel^-2 units (zero rows and columns for
         a parameter not fitted), residual [B, N]).
    """
    return _gauss_newton(X, x, K, init, weights, cauchy_px, iterations, depth_log_ratio, fit_focal)


def _solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A^-1 b`` for batched square ``A`` without the error check of ``torch.linalg.solve`` (its
    host-side test of every pivot costs more than the 6 x 6 solve itself; a singular ``A`` gives
    non-finite entries, which the callers' checks reject)."""
    return torch.linalg.solve_ex(A, b)[0]


def _calibrated_points(X: torch.Tensor, kappa: torch.Tensor, contrast: torch.Tensor,
                       log_ratio: torch.Tensor | None) -> torch.Tensor:
    """Points [B, N, 3] unprojected with the focal scale ``e^kappa`` [B, 1] instead, their depth
    raised to the contrast ``e^eta`` (``contrast`` = e^eta - 1 [B, 1], ``log_ratio`` [B, N])."""
    P = torch.cat((X[..., :2] * torch.exp(-kappa)[..., None], X[..., 2:]), -1)
    return P if log_ratio is None else P * torch.exp(contrast * log_ratio)[..., None]


def _gauss_newton(X: torch.Tensor, x: torch.Tensor, K: torch.Tensor, init: torch.Tensor,
                  weights: torch.Tensor, cauchy_px: float, iterations: int,
                  log_ratio: torch.Tensor | None, fit_focal: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The robust reweighted Gauss-Newton loop of :func:`refine_pnp` (six parameters) and
    :func:`refine_pnp_calibrate` (six plus kappa and / or eta); returns (T, theta [B, 2],
    information [B, 2, 2], residual) in the dtypes of ``init``."""
    dtype = torch.float64
    X0, x, K, T, w0 = X.to(dtype), x.to(dtype), K.to(dtype), init.to(dtype).clone(), weights.to(dtype)
    ell = None if log_ratio is None else log_ratio.to(dtype)
    B = X0.shape[0]
    fx0, fy0 = K[:, 0, 0, None], K[:, 1, 1, None]                                      # [B, 1]
    theta = torch.zeros(B, 2, dtype=dtype, device=X0.device)                          # kappa, eta
    fitted = [i for i, on in enumerate((fit_focal, ell is not None)) if on]
    info = torch.zeros(B, 2, 2, dtype=dtype, device=X0.device)
    for it in range(iterations + (1 if fitted else 0)):
        kappa, eta = theta[:, :1], theta[:, 1:]
        Xk = _calibrated_points(X0, kappa, torch.expm1(eta), ell) if fitted else X0
        fx, fy = fx0 * torch.exp(kappa), fy0 * torch.exp(kappa)
        P = Xk @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]                     # [B, N, 3]
        z = P[..., 2].clamp_min(1e-3)
        a, b, inv_z = P[..., 0] / z, P[..., 1] / z, 1.0 / z                             # normalised
        r = torch.stack((fx * a, fy * b), -1) + K[:, None, :2, 2] - x                  # [B, N, 2]
        w = torch.where(P[..., 2] > 1e-3, w0 / (1.0 + (r.norm(dim=-1) / cauchy_px) ** 2),
                        torch.zeros_like(w0))
        # d pixel / d xi for xi = (v, omega), dP = v + omega x P (the closed form of
        # [[fx/z, 0, -fx X/z^2], [0, fy/z, -fy Y/z^2]] @ [I, -[P]x]), rows u then v: [B, N, 2, 6].
        zero = torch.zeros_like(z)
        rows_u = [inv_z, zero, -a * inv_z, -a * b, 1.0 + a * a, -b]
        rows_v = [zero, inv_z, -b * inv_z, -(1.0 + b * b), a * b, a]
        moves = []  # d pixel / d theta_k = (focal term) + the points' move dP = R dX
        if fit_focal:   # the focal itself, and dX = (-X_x, -X_y, 0)
            moves.append((a, b, -(Xk * Xk.new_tensor([1.0, 1.0, 0.0])) @ T[:, :3, :3].transpose(1, 2)))
        if ell is not None:   # dX = X e^eta l
            dX = Xk * (torch.exp(eta) * ell)[..., None]
            moves.append((zero, zero, dX @ T[:, :3, :3].transpose(1, 2)))
        for du, dv, dP in moves:
            rows_u.append(du + (dP[..., 0] - a * dP[..., 2]) * inv_z)
            rows_v.append(dv + (dP[..., 1] - b * dP[..., 2]) * inv_z)
        J = torch.stack((torch.stack(rows_u, -1) * fx[..., None],
                         torch.stack(rows_v, -1) * fy[..., None]), -2)
        J, r = J.flatten(1, 2), r.flatten(1)                                            # [B, 2N, n], [B, 2N]
        Jw = J * w.repeat_interleave(2, dim=1)[..., None]
        H = Jw.transpose(1, 2) @ J                                                      # [B, n, n]
        if it == iterations:  # the extra pass of a calibration fit: its information at the solution
            Hpp, Hpc = H[:, :6, :6], H[:, :6, 6:]
            schur = H[:, 6:, 6:] - Hpc.transpose(1, 2) @ _solve(
                Hpp + 1e-9 * torch.eye(6, dtype=dtype, device=X0.device), Hpc)
            index = torch.tensor(fitted, device=X0.device)
            info[:, index[:, None], index[None, :]] = 0.5 * (schur + schur.transpose(1, 2))
            break
        g = (Jw.transpose(1, 2) @ r[..., None])                                         # [B, n, 1]
        # Marquardt's damping, per parameter: a weakly seen one (the depth contrast) is not
        # damped by the scale of the well-seen ones
        damp = torch.diag_embed(DAMPING * H.diagonal(dim1=1, dim2=2) + 1e-12)
        xi = -_solve(H + damp, g)[..., 0]                                               # [B, n]
        T = _se3_step(xi[:, :6]) @ T
        if fitted:
            theta = theta.clone()
            theta[:, fitted] += xi[:, 6:]
    kappa, eta = theta[:, :1], theta[:, 1:]
    Xk = _calibrated_points(X0, kappa, torch.expm1(eta), ell)
    Kk = K.clone()
    Kk[:, 0, 0], Kk[:, 1, 1] = fx0[:, 0] * torch.exp(kappa[:, 0]), fy0[:, 0] * torch.exp(kappa[:, 0])
    P = Xk @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    residual = (project(Kk, P) - x).norm(dim=-1)
    residual = torch.where(P[..., 2] > 1e-3, residual, torch.full_like(residual, float("inf")))
    out = init.dtype
    return T.to(out), theta.to(out), info.to(out), residual.to(out)
