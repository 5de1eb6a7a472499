"""Training losses vs independent references: naive loops, scipy rotations, analytic scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from recon.train.losses import (
    LossConfig,
    confidence_weighted_l1,
    depth_gradient_loss,
    gt_points_first_camera,
    gt_relative_to_first,
    mean_depth,
    reconstruction_loss,
    rotation_geodesic,
    window_pairs_gt,
)


def _pose(rotvec, t) -> torch.Tensor:
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.from_numpy(Rotation.from_rotvec(rotvec).as_matrix())
    T[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return T


def _plane_clip(H=12, W=16, T=3, plane_z=4.0, seed=0):
    """Cameras looking at the world plane z = plane_z; depth ray-cast in closed form.

    Returns a batch dict (dataset world) and the true first-camera-frame points of every pixel.
    """
    rng = np.random.default_rng(seed)
    K = torch.tensor([[14.0, 0, (W - 1) / 2], [0, 14.0, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    poses = [_pose(rng.normal(0, 0.05, 3), rng.normal(0, 0.2, 3)) for _ in range(T)]
    world_from_first = poses[0]
    depth = torch.zeros(T, H, W, dtype=torch.float64)
    truth = torch.zeros(T, H, W, 3, dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                          indexing="ij")
    rays = torch.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)), -1)
    for i, P in enumerate(poses):
        R, c = P[:3, :3], P[:3, 3]
        d_world = rays @ R.T                      # world directions of camera rays with z = 1
        lam = (plane_z - c[2]) / d_world[..., 2]  # so the ray parameter is the z-depth
        depth[i] = lam
        hit = c + lam[..., None] * d_world
        inv = torch.linalg.inv(world_from_first)
        truth[i] = hit @ inv[:3, :3].T + inv[:3, 3]
    batch = {"depth": depth[None].float(), "K": K.expand(1, T, 3, 3).float(),
             "cam2world": torch.stack(poses)[None].float(), "dataset": ["synthetic"]}
    return batch, truth[None].float()


def _window_loop(cam2world: torch.Tensor, slots: int) -> torch.Tensor:
    """Window poses by a plain loop: [B, T, S, 4, 4], slot j-1 = inv(P[t-j]) P[t] (identity if t < j)."""
    B, T = cam2world.shape[:2]
    out = torch.eye(4).repeat(B, T, slots, 1, 1)
    for b in range(B):
        for t in range(T):
            for j in range(1, slots + 1):
                if t - j >= 0:
                    out[b, t, j - 1] = (torch.linalg.inv(cam2world[b, t - j].double())
                                        @ cam2world[b, t].double()).float()
    return out


def _perfect_prediction(batch, scale: float = 1.0, slots: int = 2) -> dict:
    """Model-style outputs equal to the ground truth, uniformly scaled by ``scale``."""
    rel = gt_relative_to_first(batch["cam2world"])
    pts = gt_points_first_camera(batch["depth"], batch["K"], rel)
    B, T, H, W = batch["depth"].shape
    cam2world = rel.clone()
    cam2world[..., :3, 3] *= scale
    window = _window_loop(batch["cam2world"], slots)
    window[..., :3, 3] *= scale
    fov_h = 2 * torch.atan((H / 2) / batch["K"][..., 1, 1])
    fov_w = 2 * torch.atan((W / 2) / batch["K"][..., 0, 0])
    pose_enc = torch.zeros(B, T, 9)
    pose_enc[..., 7], pose_enc[..., 8] = fov_h, fov_w
    return {"depth": batch["depth"] * scale, "depth_conf": torch.ones(B, T, H, W),
            "world_points": pts * scale, "cam2world": cam2world, "window_cam2world": window,
            "pose_enc": pose_enc}


def test_gt_relative_to_first_is_identity_at_frame_zero_and_matches_inverse():
    batch, _ = _plane_clip()
    rel = gt_relative_to_first(batch["cam2world"].double())
    torch.testing.assert_close(rel[0, 0], torch.eye(4, dtype=torch.float64))
    expected = torch.linalg.inv(batch["cam2world"][0, 0].double()) @ batch["cam2world"][0, 2].double()
    torch.testing.assert_close(rel[0, 2], expected)


def test_gt_points_land_on_the_analytic_plane_in_the_first_camera_frame():
    batch, truth = _plane_clip()
    pts = gt_points_first_camera(batch["depth"], batch["K"], gt_relative_to_first(batch["cam2world"]))
    torch.testing.assert_close(pts, truth, atol=2e-4, rtol=1e-4)


def test_mean_depth_is_mean_of_valid_pixels():
    depth = torch.tensor([[[[5.0, 1.0, 100.0]]]])
    valid = torch.tensor([[[[True, True, False]]]])
    assert mean_depth(depth, valid).item() == pytest.approx(3.0)
    assert mean_depth(depth, torch.zeros_like(valid)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("previous", [0, 1, 3], ids=["no-previous", "1-previous", "3-previous"])
def test_window_pairs_match_a_loop_across_segment_boundaries(previous):
    batch, _ = _plane_clip(T=6, seed=5)
    poses = batch["cam2world"]
    rel, valid = window_pairs_gt(poses[:, previous:], poses[:, :previous] if previous else None, 3)
    expected = _window_loop(poses, 3)[:, previous:]
    for t in range(6 - previous):
        for j in range(1, 4):
            assert bool(valid[t, j - 1]) == (previous + t - j >= 0)
            if valid[t, j - 1]:
                torch.testing.assert_close(rel[0, t, j - 1], expected[0, t, j - 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vector", [False, True], ids=["scalar-residual", "point-residual"])
def test_confidence_weighted_l1_matches_naive_loop(vector):
    g = torch.Generator().manual_seed(1)
    shape = (2, 3, 4, 5)
    residual = torch.randn(*shape, 3, generator=g) if vector else torch.randn(*shape, generator=g)
    conf = 1 + torch.rand(*shape, generator=g) * 3
    valid = torch.rand(*shape, generator=g) > 0.3
    alpha = 0.2
    total, n = 0.0, 0
    for idx in np.ndindex(*shape):
        if valid[idx]:
            r = residual[idx]
            err = math.sqrt(float((r * r).sum())) if vector else abs(float(r))
            total += float(conf[idx]) * err - alpha * math.log(float(conf[idx]))
            n += 1
    got = confidence_weighted_l1(residual, conf, valid, alpha)
    assert got.item() == pytest.approx(total / n, rel=1e-5)


def test_depth_gradient_loss_matches_naive_loop():
    g = torch.Generator().manual_seed(2)
    pred, gt = torch.rand(1, 2, 5, 6, generator=g), torch.rand(1, 2, 5, 6, generator=g)
    valid = torch.rand(1, 2, 5, 6, generator=g) > 0.2
    total, n = 0.0, 0
    for t in range(2):
        for y in range(5):
            for x in range(6):
                for dy, dx in ((0, 1), (1, 0)):
                    y2, x2 = y + dy, x + dx
                    if y2 < 5 and x2 < 6 and valid[0, t, y, x] and valid[0, t, y2, x2]:
                        dp = float(pred[0, t, y2, x2] - pred[0, t, y, x])
                        dg = float(gt[0, t, y2, x2] - gt[0, t, y, x])
                        total += abs(dp - dg)
                        n += 1
    assert depth_gradient_loss(pred, gt, valid).item() == pytest.approx(total / n, rel=1e-5)


@pytest.mark.parametrize("angle_deg", [0.0, 1e-3, 10.0, 90.0, 179.0], ids=lambda a: f"{a}deg")
def test_rotation_geodesic_matches_scipy_magnitude(angle_deg):
    rng = np.random.default_rng(3)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    Ra = Rotation.from_rotvec(rng.normal(size=3))
    Rb = Ra * Rotation.from_rotvec(axis * np.deg2rad(angle_deg))
    expected = (Ra.inv() * Rb).magnitude()
    got = rotation_geodesic(torch.from_numpy(Ra.as_matrix()), torch.from_numpy(Rb.as_matrix()))
    assert got.item() == pytest.approx(expected, abs=1e-7)


def test_rotation_geodesic_has_finite_gradient_at_identity():
    R = torch.eye(3, dtype=torch.float64, requires_grad=True)
    rotation_geodesic(R, torch.eye(3, dtype=torch.float64)).backward()
    assert torch.isfinite(R.grad).all()


@pytest.mark.parametrize("scale", [1.0, 0.37, 5.0], ids=["same-scale", "scale-0.37", "scale-5"])
def test_perfect_prediction_up_to_scale_has_zero_scale_invariant_loss(scale):
    batch, _ = _plane_clip()
    out = reconstruction_loss(_perfect_prediction(batch, scale), batch, LossConfig(camera_absolute=1.0))
    for key in ("depth", "points", "gradient", "camera_translation", "camera_rotation", "camera_absolute",
                "camera_fov"):
        assert out[key].item() == pytest.approx(0.0, abs=2e-5), key
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-4)
    assert out["scale_ratio"].item() == pytest.approx(scale, rel=1e-5)


def test_metric_scale_loss_is_log_of_scale_error_and_only_for_metric_datasets():
    batch, _ = _plane_clip()
    pred = _perfect_prediction(batch, 2.0)
    cfg = LossConfig(metric_scale=1.0, metric_datasets=["synthetic"])
    got = reconstruction_loss(pred, batch, cfg)["metric_scale"].item()
    assert got == pytest.approx(math.log(2.0), rel=1e-5)
    cfg_other = LossConfig(metric_scale=1.0, metric_datasets=["scannet"])
    assert reconstruction_loss(pred, batch, cfg_other)["metric_scale"].item() == 0.0


def test_errors_raise_the_loss_by_the_hand_computed_amount():
    """A 0.1 rad error on the one window pair of a 2-frame clip, the same on the absolute pose,
    a translation error of one mean depth, and a confidence of 2 everywhere, hand-checked."""
    batch, _ = _plane_clip(T=2)
    pred = _perfect_prediction(batch)
    R_err = torch.from_numpy(Rotation.from_rotvec([0.0, 0.1, 0.0]).as_matrix()).float()
    pred["window_cam2world"][0, 1, 0, :3, :3] = pred["window_cam2world"][0, 1, 0, :3, :3] @ R_err
    cfg = LossConfig(camera_absolute=1.0)
    out = reconstruction_loss(pred, batch, cfg)
    assert out["camera_rotation"].item() == pytest.approx(0.1, rel=1e-4)  # 1 valid pair of 2 slots x 2 frames
    assert out["camera_absolute"].item() == pytest.approx(0.0, abs=1e-5)
    pred = _perfect_prediction(batch)
    pred["cam2world"][0, 1, :3, :3] = pred["cam2world"][0, 1, :3, :3] @ R_err
    assert reconstruction_loss(pred, batch, cfg)["camera_absolute"].item() == pytest.approx(0.1, rel=1e-4)
    pred = _perfect_prediction(batch)
    scale = mean_depth(batch["depth"], batch["depth"] > 0).item()
    pred["window_cam2world"][0, 1, 0, 0, 3] += scale                       # one mean depth along x
    assert reconstruction_loss(pred, batch, cfg)["camera_translation"].item() == pytest.approx(1.0, rel=1e-4)
    # Confidence 2 everywhere: depth term = 0 * 2 - alpha * log 2 on every pixel.
    pred = _perfect_prediction(batch)
    pred["depth_conf"] = torch.full_like(pred["depth_conf"], 2.0)
    out = reconstruction_loss(pred, batch, cfg)
    assert out["depth"].item() == pytest.approx(-cfg.conf_alpha * math.log(2.0), rel=1e-5)


def test_loss_gradients_reach_every_prediction_and_are_finite():
    batch, _ = _plane_clip()
    pred = _perfect_prediction(batch, 1.3)
    g = torch.Generator().manual_seed(4)
    leaves = {k: (v + 0.05 * torch.randn(v.shape, generator=g)).requires_grad_() for k, v in pred.items()
              if k != "depth_conf"}
    leaves["depth_conf"] = (1.5 + torch.rand(pred["depth_conf"].shape, generator=g)).requires_grad_()
    out = reconstruction_loss(leaves, batch, LossConfig(metric_scale=0.1, camera_absolute=0.5))
    out["loss"].backward()
    for key, leaf in leaves.items():
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), key
        assert leaf.grad.abs().sum() > 0, key


def test_clip_without_depth_compares_translations_by_camera_distance():
    batch, _ = _plane_clip()
    pred = _perfect_prediction(batch, 3.0)
    batch = {**batch, "depth": torch.zeros_like(batch["depth"])}
    out = reconstruction_loss(pred, batch, LossConfig())
    assert out["depth"].item() == 0.0 and out["points"].item() == 0.0
    assert out["camera_translation"].item() == pytest.approx(0.0, abs=1e-5)
