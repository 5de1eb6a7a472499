"""Online motion averaging and the stateful pose readout vs independent references: scipy's
optimiser for the geometric median, scipy rotations, closed-form trajectories, a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from recon.geometry import rotmat_to_quat_wxyz
from recon.model.motion_averaging import SCALE_FLOOR, fuse_pose_candidates
from recon.model.readout import empty_pose_history, stream_pose_readout


def _pose(rotvec, t) -> torch.Tensor:
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.from_numpy(Rotation.from_rotvec(rotvec).as_matrix())
    T[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return T


def _angle(Ra: torch.Tensor, Rb: torch.Tensor) -> float:
    return Rotation.from_matrix((Ra.T @ Rb).double().numpy()).magnitude()


def test_identical_candidates_fuse_to_themselves():
    P = _pose([0.1, -0.2, 0.3], [1.0, 2.0, -0.5])
    fused, none = fuse_pose_candidates(P.expand(1, 5, 4, 4).clone(), torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(fused[0], P, atol=1e-9, rtol=0)
    assert not none.any()


def test_translation_is_the_cauchy_m_estimate_of_scipys_optimiser():
    """Converged, the fused translation minimises sum log(1 + (d / c)^2), c = median distance to
    the medoid, from the medoid (computed here by a plain loop)."""
    rng = np.random.default_rng(0)
    pts = np.concatenate((rng.normal(size=(6, 3)) * 0.1, [[3.0, -1.0, 2.0]]))
    cost = [sum(np.linalg.norm(p - q) for q in pts) for p in pts]
    medoid = pts[int(np.argmin(cost))]
    c = float(np.median(np.linalg.norm(pts - medoid, axis=1))) + SCALE_FLOOR
    ref = minimize(lambda x: np.log1p((np.linalg.norm(pts - x, axis=1) / c) ** 2).sum(), medoid,
                   method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 40000}).x
    cands = torch.stack([_pose([0, 0, 0], p) for p in pts])[None]
    fused, _ = fuse_pose_candidates(cands, torch.ones(1, 7, dtype=torch.bool), iterations=300)
    np.testing.assert_allclose(fused[0, :3, 3].numpy(), ref, atol=1e-5)


def test_one_bad_estimate_does_not_move_the_fused_pose():
    """Six candidates scattered 1 mm / 0.001 rad around P and one 2 m / 90 degrees off: the fused
    pose stays within the inliers' scatter while their plain mean would move by ~0.3 m."""
    rng = np.random.default_rng(1)
    P = _pose([0.2, 0.1, -0.1], [0.5, -0.3, 2.0])
    inliers = [P @ _pose(rng.normal(0, 1e-3, 3), rng.normal(0, 1e-3, 3)) for _ in range(6)]
    outlier = P @ _pose([math.pi / 2, 0, 0], [2.0, 0.0, 0.0])
    cands = torch.stack([inliers[0], outlier, *inliers[1:]])[None]
    fused, _ = fuse_pose_candidates(cands, torch.ones(1, 7, dtype=torch.bool))
    assert (fused[0, :3, 3] - P[:3, 3]).norm() < 3e-3
    assert _angle(fused[0, :3, :3], P[:3, :3]) < 3e-3
    assert (cands[0, :, :3, 3].mean(0) - P[:3, 3]).norm() > 0.25


def test_symmetric_rotation_candidates_average_to_the_centre():
    """Four rotations 0.05 rad about +-x and +-y of R0 (a square around it): the median is R0."""
    R0 = _pose([0.3, -0.4, 0.2], [0, 0, 0])
    offsets = ([0.05, 0, 0], [-0.05, 0, 0], [0, 0.05, 0], [0, -0.05, 0])
    cands = torch.stack([R0 @ _pose(w, [0, 0, 0]) for w in offsets])[None]
    fused, _ = fuse_pose_candidates(cands, torch.ones(1, 4, dtype=torch.bool))
    assert _angle(fused[0, :3, :3], R0[:3, :3]) < 1e-4


def test_invalid_and_non_finite_candidates_are_left_out():
    P, Q = _pose([0.1, 0, 0], [1, 0, 0]), _pose([0, 0.2, 0], [0, 3, 0])
    bad = torch.full((4, 4), float("nan"), dtype=torch.float64)
    cands = torch.stack([P, Q, bad, P])[None]
    valid = torch.tensor([[True, False, True, True]])
    fused, none = fuse_pose_candidates(cands, valid)
    torch.testing.assert_close(fused[0], P, atol=1e-9, rtol=0)
    fused, none = fuse_pose_candidates(cands, torch.tensor([[False, False, True, False]]))
    assert none.tolist() == [True] and torch.isfinite(fused).all()


def _window_truth(traj: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame t and slot j, translation and wxyz quaternion of inv(traj[t-j]) traj[t] (loop)."""
    T = traj.shape[0]
    trans = torch.zeros(1, T, slots, 3, dtype=torch.float64)
    quat = torch.zeros(1, T, slots, 4, dtype=torch.float64)
    quat[..., 0] = 1.0
    for t in range(T):
        for j in range(1, slots + 1):
            if t - j >= 0:
                rel = torch.linalg.inv(traj[t - j]) @ traj[t]
                trans[0, t, j - 1] = rel[:3, 3]
                quat[0, t, j - 1] = rotmat_to_quat_wxyz(rel[:3, :3])
    return trans, quat


def _random_walk(T: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    poses = [torch.eye(4, dtype=torch.float64)]
    for _ in range(T - 1):
        poses.append(poses[-1] @ _pose(rng.normal(0, 0.05, 3), rng.normal(0, 0.1, 3)))
    return torch.stack(poses)


@pytest.mark.parametrize("split", [None, 7], ids=["one-call", "split-at-7"])
def test_perfect_window_poses_recover_the_trajectory(split):
    traj = _random_walk(20, seed=2)
    trans, quat = _window_truth(traj, 3)
    raw = torch.zeros(1, 20, dtype=torch.float64)
    history = empty_pose_history(1, 3, "cpu")
    history.cam2world, history.log_scale = history.cam2world.double(), history.log_scale.double()
    if split is None:
        cam2world, _, _, _ = stream_pose_readout(raw, trans, quat, history, 0, 0.05)
    else:
        first, rest = slice(0, split), slice(split, None)
        a, _, _, history = stream_pose_readout(raw[:, first], trans[:, first], quat[:, first], history, 0,
                                               0.05)
        b, _, _, _ = stream_pose_readout(raw[:, rest], trans[:, rest], quat[:, rest], history, split, 0.05)
        cam2world = torch.cat((a, b), 1)
    torch.testing.assert_close(cam2world[0], traj, atol=1e-9, rtol=0)


def test_one_corrupted_slot_per_frame_leaves_the_trajectory_intact():
    """From frame 3 on (three candidates), slot 2 of every frame is a wild estimate; slots 1 and 3
    agree, so the median keeps the trajectory."""
    traj = _random_walk(30, seed=3)
    trans, quat = _window_truth(traj, 3)
    trans[:, 3:, 1] += torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64)
    quat[:, 3:, 1] = torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    history = empty_pose_history(1, 3, "cpu")
    history.cam2world, history.log_scale = history.cam2world.double(), history.log_scale.double()
    raw = torch.zeros(1, 30, dtype=torch.float64)
    cam2world, _, _, _ = stream_pose_readout(raw, trans, quat, history, 0, 0.05)
    err = (cam2world[0, :, :3, 3] - traj[:, :3, 3]).norm(dim=-1)
    angle = [_angle(cam2world[0, t, :3, :3], traj[t, :3, :3]) for t in range(30)]
    assert err.max() < 1e-3 and max(angle) < 1e-3


def test_scale_is_a_running_mean_then_an_ema_and_multiplies_translations():
    g = torch.Generator().manual_seed(4)
    T, ema = 40, 0.1
    raw = torch.randn(1, T, generator=g, dtype=torch.float64)
    trans = torch.randn(1, T, 2, 3, generator=g, dtype=torch.float64) * 0.1
    quat = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(1, T, 2, 4)
    history = empty_pose_history(1, 2, "cpu")
    history.cam2world, history.log_scale = history.cam2world.double(), history.log_scale.double()
    _, scale, window, _ = stream_pose_readout(raw, trans, quat, history, 0, ema)
    expected, log_s = [], 0.0
    for n in range(T):
        if n < 1 / ema:
            log_s = float(raw[0, : n + 1].mean())                 # running mean for the first 1/ema frames
        else:
            log_s = (1 - ema) * log_s + ema * float(raw[0, n])
        expected.append(math.exp(log_s))
    np.testing.assert_allclose(scale[0].numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(window[..., :3, 3], trans * scale[..., None, None])


def test_non_finite_window_falls_back_to_the_previous_pose_and_is_counted():
    traj = _random_walk(6, seed=5)
    trans, quat = _window_truth(traj, 2)
    trans[0, 4] = float("nan")
    history = empty_pose_history(1, 2, "cpu")
    history.cam2world, history.log_scale = history.cam2world.double(), history.log_scale.double()
    cam2world, _, _, history = stream_pose_readout(torch.zeros(1, 6, dtype=torch.float64), trans, quat,
                                                   history, 0, 0.05)
    assert torch.isfinite(cam2world).all()
    torch.testing.assert_close(cam2world[0, 4], cam2world[0, 3])
    assert history.fallbacks.tolist() == [1]
