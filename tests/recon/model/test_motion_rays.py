"""The focal-normalised motion channels (``head.motion_rays``): camera invariance of the flow
channels against a closed-form rotation flow, the pooled intrinsics, a zero start, gradients into
the field of view, and the clip path == the streaming step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recon.checkpoint import init_from_checkpoint, save_weights
from recon.model import build_model
from recon.model.motion_encoder import CELL, RAY_FLOW_SCALE, motion_intrinsics, ray_channels
from recon.model.pose_enc import fov_to_intrinsics
from tests.numerics import assert_rel_close
from tests.recon.model.test_model_streaming import moving_video, small_model


def _K(f: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _rotation_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


@pytest.mark.parametrize("f", [40.0, 75.0, 130.0])
def test_ray_flow_of_a_rotation_is_the_same_for_every_focal_length(f):
    """A pure rotation moves each ray by a displacement that depends only on the ray (normalised
    coordinates), so pixel flow = f x that displacement. Built here per cell from the rotated ray,
    the ray channels give back that f-free displacement and the cell rays for any f."""
    h, w, grid = 96, 128, (12, 16)
    K = _K(f, 63.2, 47.9)
    # Mean pixel of each 8 x 8 cell, by hand: columns 8j .. 8j + 7 -> 8j + 3.5.
    u = (torch.arange(grid[1], dtype=torch.float64) * CELL + 3.5).view(1, -1).expand(grid)
    v = (torch.arange(grid[0], dtype=torch.float64) * CELL + 3.5).view(-1, 1).expand(grid)
    rays = torch.stack(((u - K[0, 2]) / f, (v - K[1, 2]) / f, torch.ones(grid, dtype=torch.float64)), -1)
    moved = rays @ _rotation_y(0.03).T
    displacement = moved[..., :2] / moved[..., 2:] - rays[..., :2]              # normalised, f-free
    flow_cells = (f * displacement).permute(2, 0, 1)[None] / CELL                # motion pixels / CELL
    out = ray_channels(flow_cells, K[None], (h, w))
    assert out.shape == (1, 4, *grid)
    assert_rel_close(out[0, :2] / RAY_FLOW_SCALE, displacement.permute(2, 0, 1), 1e-12, "ray flow")
    assert_rel_close(out[0, 2:], rays[..., :2].permute(2, 0, 1), 1e-12, "cell rays")
    # Near the centre a rotation about y by w moves the ray by about w (small-angle closed form).
    centre = out[0, 0, 6, 8] / RAY_FLOW_SCALE
    assert abs(float(centre) - 0.03) < 1e-3


def test_motion_intrinsics_follow_average_pooling():
    """A pixel of the pooled frame is the mean of pool x pool pixels: unprojecting a pooled pixel
    with the pooled K gives the ray of the mean full-resolution pixel."""
    K = _K(100.0, 63.5, 47.5)
    Km = motion_intrinsics(K, 4)
    ramp = torch.arange(128, dtype=torch.float64).view(1, 1, 1, 128).expand(1, 1, 8, 128)
    pooled_x = F.avg_pool2d(ramp, 4)[0, 0, 0]                                     # mean pixel per cell
    for i in (0, 5, 31):
        assert math.isclose((i - Km[0, 2].item()) / Km[0, 0].item(),
                            (pooled_x[i].item() - K[0, 2].item()) / K[0, 0].item(), abs_tol=1e-12)


def test_a_model_with_rays_starts_as_the_model_without_them(tmp_path):
    """Fine-tuning start: a model without the rays, exported and loaded into one with them, gives
    the same outputs (the ray convolution starts at zero); only its two tensors keep their init."""
    base = small_model("gla", {})
    save_weights(base, tmp_path / "base")
    cfg = base.cfg.to_dict()
    cfg["head"]["motion_rays"] = True
    torch.manual_seed(5)
    rays = build_model(cfg).eval()
    kept = init_from_checkpoint(rays, tmp_path / "base")
    assert kept == ["motion_encoder.ray_conv.bias", "motion_encoder.ray_conv.weight"]
    video = moving_video(1, 5, 32, 48)
    with torch.no_grad():
        a, b = base(video), rays(video)
    for key in ("depth", "cam2world", "window_cam2world", "K"):
        assert torch.equal(a[key], b[key]), key


def _rays_model():
    net = small_model("gla", {})
    cfg = net.cfg.to_dict()
    cfg["head"]["motion_rays"] = True
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    with torch.no_grad():
        net.motion_encoder.ray_conv.weight.normal_(std=0.3)
    return net


def test_clip_path_equals_the_streaming_step_with_rays():
    net = _rays_model()
    B, T = 2, 6
    video = moving_video(B, T, 32, 48)
    with torch.no_grad():
        full = net(video)
        state, steps = net.init_state(B), []
        for t in range(T):
            out, state = net.step(video[:, t], state)
            steps.append(out)
    for key in ("cam2world", "window_cam2world", "depth", "K"):
        assert_rel_close(full[key], torch.stack([o[key] for o in steps], 1), 1e-4, key)


def test_the_window_poses_depend_on_the_focal_length_through_the_rays():
    """Without known K the pose loss reaches the fov head through the ray channels; a given K
    replaces the estimate, and another K gives other window poses."""
    net = _rays_model().train()
    video = moving_video(1, 4, 32, 48)
    out = net(video)
    out["window_cam2world"][..., :3, 3].square().sum().backward()
    grad = net.camera_trunk.fov[-1].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        K1 = fov_to_intrinsics(torch.tensor([0.9]), torch.tensor([1.2]), 32, 48)
        K2 = fov_to_intrinsics(torch.tensor([0.6]), torch.tensor([0.8]), 32, 48)
        p1, p2 = net(video, K1)["window_cam2world"], net(video, K2)["window_cam2world"]
    assert (p1 - p2).abs().max() > 1e-6
