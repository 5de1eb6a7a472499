"""refine_pnp against OpenCV's solvePnP, refine_pnp_calibrate against the camera and depth that made
the pixels, and interpolate_poses against scipy's Slerp."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from recon.geometry import interpolate_poses, rotation_geodesic
from recon.geometry.pnp import _se3_step, project, refine_pnp, refine_pnp_calibrate


def _scene(seed: int, n: int = 150):
    """Points in front of a source camera, a target camera a small rigid motion away."""
    rng = np.random.default_rng(seed)
    X = np.stack([rng.uniform(-1.5, 1.5, n), rng.uniform(-1.0, 1.0, n), rng.uniform(2.0, 5.0, n)], -1)
    R = Rotation.from_rotvec(rng.normal(0, 0.06, 3)).as_matrix()
    t = rng.normal(0, 0.1, 3)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    K = np.array([[110.0, 0, 63.5], [0, 112.0, 47.5], [0, 0, 1]])
    P = X @ R.T + t
    x = (P[:, :2] / P[:, 2:]) * [K[0, 0], K[1, 1]] + K[:2, 2]
    return X, x, K, T


def _perturbed(T: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    D = np.eye(4)
    D[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.03, 3)).as_matrix()
    D[:3, 3] = rng.normal(0, 0.05, 3)
    return D @ T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refine_pnp_matches_opencv_on_noisy_correspondences(seed):
    X, x, K, T = _scene(seed)
    x = x + np.random.default_rng(seed + 7).normal(0, 0.3, x.shape)     # pixel noise
    ok, rvec, tvec = cv2.solvePnP(X, x, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
    assert ok
    ref = np.eye(4)
    ref[:3, :3], ref[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
    init = torch.from_numpy(_perturbed(T, seed))[None]
    est, residual = refine_pnp(torch.from_numpy(X)[None], torch.from_numpy(x)[None],
                               torch.from_numpy(K)[None], init, torch.ones(1, len(X), dtype=torch.float64),
                               cauchy_px=50.0)
    # a large Cauchy scale ~ least squares, which is what solvePnP minimises
    assert np.abs(est[0].numpy() - ref).max() < 2e-4
    assert float(residual.median()) < 0.6


def test_refine_pnp_ignores_outliers_and_zero_weights():
    X, x, K, T = _scene(3, n=200)
    rng = np.random.default_rng(5)
    bad = rng.choice(len(X), 40, replace=False)                          # 20% gross outliers
    x_bad = x.copy()
    x_bad[bad] += rng.uniform(5, 25, (40, 2)) * rng.choice([-1.0, 1.0], (40, 2))   # >= 5 px off
    weights = torch.ones(1, len(X), dtype=torch.float64)
    weights[0, :10] = 0.0
    x_bad[:10] = 0.0                                                      # unused rows: garbage
    est, residual = refine_pnp(torch.from_numpy(X)[None], torch.from_numpy(x_bad)[None],
                               torch.from_numpy(K)[None], torch.from_numpy(_perturbed(T, 3))[None],
                               weights, cauchy_px=1.0)
    assert np.abs(est[0].numpy() - T).max() < 1e-3
    good = np.setdiff1d(np.arange(10, len(X)), bad)
    # Cauchy weights never reach 0, so the outliers pull the fit by a few hundredths of a pixel
    assert float(residual[0, good].max()) < 0.05
    assert float(residual[0, bad].min()) > 4.0


def test_refine_pnp_is_batched():
    scenes = [_scene(s) for s in (0, 1)]
    X = torch.from_numpy(np.stack([s[0] for s in scenes]))
    x = torch.from_numpy(np.stack([s[1] for s in scenes]))
    K = torch.from_numpy(np.stack([s[2] for s in scenes]))
    init = torch.from_numpy(np.stack([_perturbed(s[3], i) for i, s in enumerate(scenes)]))
    est, _ = refine_pnp(X, x, K, init, torch.ones(2, X.shape[1], dtype=torch.float64), cauchy_px=1.0)
    for b, s in enumerate(scenes):
        assert np.abs(est[b].numpy() - s[3]).max() < 1e-6
        assert torch.allclose(project(K[b:b + 1], X[b:b + 1] @ est[b, :3, :3].T + est[b, :3, 3]), x[b:b + 1],
                              atol=1e-6)


def _video_pair(seed: int, focal: float, turn: float, n: int = 192, contrast: float = 1.0,
                shift: float = 0.05):
    """One camera (focal ``focal``, 128 x 96) before and after a move: the second frame's rays
    times depth (unprojected with a wrong focal of 95 px, the depth's log spread around its median
    divided by ``contrast``), and their pixels in the first."""
    rng = np.random.default_rng(seed)
    u = np.stack([rng.uniform(0, 127, n), rng.uniform(0, 95, n)], -1)
    depth = rng.uniform(1.5, 4.0, n)
    K_true = np.array([[focal, 0, 63.5], [0, focal, 47.5], [0, 0, 1]])
    rays = np.concatenate(((u - K_true[:2, 2]) / focal, np.ones((n, 1))), -1)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(np.array([0.3, 1.0, 0.2]) * turn).as_matrix()
    T[:3, 3] = rng.normal(0, shift, 3)
    P = rays * depth[:, None] @ T[:3, :3].T + T[:3, 3]
    x = (P[:, :2] / P[:, 2:]) * focal + K_true[:2, 2]
    K_wrong = K_true.copy()
    K_wrong[0, 0] = K_wrong[1, 1] = 95.0
    median = np.median(depth)
    flat = median * (depth / median) ** (1.0 / contrast)
    X_wrong = np.concatenate(((u - K_wrong[:2, 2]) / 95.0, np.ones((n, 1))), -1) * flat[:, None]
    return X_wrong, x, K_wrong, T, np.log(flat / median)


def _t(a):
    return torch.from_numpy(a)[None]


@pytest.mark.parametrize("seed,focal", [(0, 70.0), (1, 80.0), (2, 120.0)])
def test_refine_pnp_calibrate_recovers_the_focal_length_that_made_the_pixels(seed, focal):
    X, x, K, T, _ = _video_pair(seed, focal, turn=0.08)
    w = torch.ones(1, len(X), dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)[None]
    est, theta, info, residual = refine_pnp_calibrate(_t(X), _t(x), _t(K), eye,
                                                      w, cauchy_px=1.0)
    assert abs(95.0 * np.exp(float(theta[0, 0])) - focal) < 1e-3 * focal
    assert float(theta[0, 1]) == 0.0                                     # no depth ratio: eta not fitted
    assert np.abs(est[0].numpy() - T).max() < 1e-5 and float(residual.max()) < 1e-4
    assert float(info[0, 0, 0]) > 0 and float(info[0, 1].abs().sum()) == 0.0
    # the plain fit with the wrong focal length cannot explain the pixels
    _, plain = refine_pnp(_t(X), _t(x), _t(K), torch.eye(4, dtype=torch.float64)[None], w, cauchy_px=1.0)
    assert float(plain.median()) > 0.1


@pytest.mark.parametrize("seed,focal,contrast", [(0, 70.0, 2.0), (1, 110.0, 0.7), (2, 95.0, 1.6)])
def test_refine_pnp_calibrate_recovers_focal_length_and_depth_contrast_together(seed, focal, contrast):
    # the points' depth has too little (or too much) contrast: m (d / m)^(1 / contrast); the fit of
    # both finds focal and log contrast, a fit of the pose alone with the right focal length cannot
    X, x, K, T, ratio = _video_pair(seed, focal, turn=0.08, contrast=contrast, shift=0.3)
    w = torch.ones(1, len(X), dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)[None]
    est, theta, info, residual = refine_pnp_calibrate(_t(X), _t(x), _t(K), eye,
                                                      w, 1.0, 15, _t(ratio))
    assert abs(95.0 * np.exp(float(theta[0, 0])) - focal) < 1e-3 * focal
    assert abs(float(theta[0, 1]) - np.log(contrast)) < 1e-3
    assert np.abs(est[0].numpy() - T).max() < 1e-5 and float(residual.max()) < 1e-4
    assert bool((torch.linalg.eigvalsh(info[0]) > 0).all())
    K_true = K.copy()
    K_true[0, 0] = K_true[1, 1] = focal
    X_true_focal = X * np.array([95.0 / focal, 95.0 / focal, 1.0])
    _, theta_k, info_k, plain = refine_pnp_calibrate(_t(X_true_focal), _t(x), _t(K_true),
                                                     torch.eye(4, dtype=torch.float64)[None], w, 1.0, 15,
                                                     _t(ratio), fit_focal=False)
    assert abs(float(theta_k[0, 1]) - np.log(contrast)) < 1e-3 and float(theta_k[0, 0]) == 0.0
    assert float(info_k[0, 0].abs().sum()) == 0.0 and float(info_k[0, 1, 1]) > 0
    _, alone = refine_pnp(_t(X_true_focal), _t(x), _t(K_true), eye, w, 1.0)
    assert float(alone.median()) > 0.05


def test_refine_pnp_calibrate_information_grows_with_the_rotation():
    infos = []
    for turn in (0.0, 0.02, 0.08):
        X, x, K, T, _ = _video_pair(4, 75.0, turn)
        _, _, info, _ = refine_pnp_calibrate(_t(X), _t(x), _t(K), torch.from_numpy(T)[None],
                                             torch.ones(1, len(X), dtype=torch.float64), cauchy_px=1.0)
        infos.append(float(info[0, 0, 0]))
    assert infos[0] < infos[1] < infos[2]


@pytest.mark.parametrize("scale", [0.0, 1e-6, 1e-3, 0.5, 3.0])
def test_se3_step_is_the_exponential_of_scipy(scale):
    xi = np.random.default_rng(3).normal(0, 1, (20, 6)) * scale
    step = _se3_step(torch.from_numpy(xi)).numpy()
    np.testing.assert_allclose(step[:, :3, :3], Rotation.from_rotvec(xi[:, 3:]).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(step[:, :3, 3], xi[:, :3])
    np.testing.assert_array_equal(step[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (20, 1)))


def test_interpolate_poses_follows_slerp_and_lerp():
    rng = np.random.default_rng(0)
    a, b = np.eye(4), np.eye(4)
    ra, rb = Rotation.from_rotvec(rng.normal(0, 0.5, 3)), Rotation.from_rotvec(rng.normal(0, 0.5, 3))
    a[:3, :3], b[:3, :3] = ra.as_matrix(), rb.as_matrix()
    a[:3, 3], b[:3, 3] = rng.normal(size=3), rng.normal(size=3)
    slerp = Slerp([0.0, 1.0], Rotation.concatenate([ra, rb]))
    for w in (0.0, 0.3, 1.0):
        out = interpolate_poses(torch.from_numpy(a), torch.from_numpy(b), w).numpy()
        assert np.abs(out[:3, :3] - slerp([w]).as_matrix()[0]).max() < 1e-9
        assert np.abs(out[:3, 3] - ((1 - w) * a[:3, 3] + w * b[:3, 3])).max() < 1e-12
    angle = rotation_geodesic(torch.from_numpy(a[:3, :3]), torch.from_numpy(b[:3, :3]))
    assert abs(float(angle) - (ra.inv() * rb).magnitude()) < 1e-9
