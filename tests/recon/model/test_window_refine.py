"""Window-pose refinement: a perturbed trunk pose is pulled to the rendered motion, a wild one and
an untextured pair are left alone; the focal self-calibration finds the rendering focal length and
streams it in closed form; the settings are checked; clip == step with both on."""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import pytest
import torch
from kornia.geometry.conversions import quaternion_to_rotation_matrix, rotation_matrix_to_quaternion

from data.synth.sequence import SynthConfig, synthetic_sequence
from recon.checkpoint import DEFAULT_CHECKPOINT, load_model
from recon.errors import ConfigError
from recon.geometry import rotation_geodesic
from recon.model import load_model_config
from recon.model.config import RefineConfig
from recon.model.embed import IMAGENET_MEAN, IMAGENET_STD
from recon.model.motion_encoder import CELL, lucas_kanade, motion_frames
from recon.model.window_refine import (
    accumulate_focal,
    calibrate_focal,
    focal_estimate,
    focal_evidence,
    refine_window_poses,
)


@lru_cache(maxsize=1)
def _frames():
    """Frames 0..11 of a static synthetic loop (images, GT depth, K, cam2world)."""
    seq = synthetic_sequence(SynthConfig(num_frames=40, trajectory="loop", num_dynamic=0, shadows=False), 11)
    out = [seq[i] for i in range(12)]
    images = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1).float() / 255 for f in out])
    depth = torch.stack([torch.from_numpy(f.depth) for f in out])
    poses = torch.stack([torch.from_numpy(f.cam2world).float() for f in out])
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return motion_frames((images - mean) / std, 1), depth, torch.from_numpy(out[0].K).float(), poses


def _pairs(t: int, slots: tuple[int, ...]):
    """Flow of (frame t, frame t - j) for each j, and the true window poses [1, S, 4, 4]."""
    m, depth, K, poses = _frames()
    grid = (m.shape[-2] // CELL, m.shape[-1] // CELL)
    flow = torch.cat([lucas_kanade(m[t:t + 1], m[t - j:t - j + 1], grid) for j in slots])
    truth = torch.stack([torch.linalg.inv(poses[t - j]) @ poses[t] for j in slots])[None]
    return flow, m.shape[-2:], depth[t:t + 1], K[None], truth


def _as_trunk(pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = rotation_matrix_to_quaternion(pose[..., :3, :3].contiguous())
    return pose[..., :3, 3].clone(), torch.where(q[..., :1] < 0, -q, q)


def _perturb(pose: torch.Tensor, shift: float, degrees: float) -> torch.Tensor:
    angle = torch.deg2rad(torch.tensor(degrees))
    R = torch.tensor([[torch.cos(angle), 0.0, torch.sin(angle)], [0.0, 1.0, 0.0],
                      [-torch.sin(angle), 0.0, torch.cos(angle)]])
    out = pose.clone()
    out[..., :3, :3] = R @ pose[..., :3, :3]
    out[..., :3, 3] = pose[..., :3, 3] + torch.tensor([shift, -shift, 0.5 * shift])
    return out


def _errors(trans, quat, truth):
    R = quaternion_to_rotation_matrix(quat)
    return ((trans - truth[..., :3, 3]).norm(dim=-1),
            torch.rad2deg(rotation_geodesic(R, truth[..., :3, :3])))


def test_a_perturbed_window_pose_is_pulled_to_the_rendered_motion():
    slots = (1, 3, 6)
    flow, size, depth, K, truth = _pairs(6, slots)
    trans, quat = _as_trunk(_perturb(truth, 0.02, 2.0))
    refined_t, refined_q, accepted = refine_window_poses(flow, size, depth, K, trans, quat, 1, RefineConfig())
    assert bool(accepted.all())
    before_t, before_r = _errors(trans, quat, truth)
    after_t, after_r = _errors(refined_t, refined_q, truth)
    # from 2 degrees and 3 cm off to the cell flow's accuracy (depth is exact; one Lucas-Kanade step
    # per level on a rendered room, ~0.3 px: ~0.25 degrees at f ~ 70 px, worse for the 6-frame pair)
    assert float(after_r.max()) < 0.5 and float(before_r.min()) > 1.9
    assert float(after_t.max()) < 0.7 * float(before_t.min())


def test_a_wild_trunk_pose_and_an_untextured_pair_keep_the_trunk_pose():
    flow, size, depth, K, truth = _pairs(6, (2, 4))
    trans, quat = _as_trunk(_perturb(truth, 0.0, 20.0))          # far past max_turn_deg
    out_t, out_q, accepted = refine_window_poses(flow, size, depth, K, trans, quat, 1, RefineConfig())
    assert not bool(accepted.any()) and torch.equal(out_t, trans) and torch.equal(out_q, quat)
    blank = torch.zeros(1, 1, *size)
    grid = (size[0] // CELL, size[1] // CELL)
    flat = lucas_kanade(blank, blank, grid).repeat(2, 1, 1, 1)   # no texture: no usable cell
    trans, quat = _as_trunk(truth)
    out_t, out_q, accepted = refine_window_poses(flat, size, depth, K, trans, quat, 1, RefineConfig())
    assert not bool(accepted.any()) and torch.equal(out_t, trans)
    bad = depth.clone()
    bad[:, :40] = float("nan")                                   # a non-finite depth never moves it
    out_t, out_q, accepted = refine_window_poses(flow, size, bad, K, trans, quat, 1,
                                                 dataclasses.replace(RefineConfig(), min_inlier_fraction=1.0))
    assert torch.isfinite(out_t).all() and torch.isfinite(out_q).all()


@pytest.mark.parametrize("start", [70.0, 95.0, 130.0])
def test_focal_evidence_finds_the_focal_length_the_frames_were_rendered_with(start):
    flow, size, depth, K, truth = _pairs(6, (1, 2, 3, 4, 5, 6))     # rotations of 0.7 .. 4.1 degrees
    trans, quat = _as_trunk(truth)
    wrong = K.clone()
    wrong[:, 0, 0] = wrong[:, 1, 1] = start
    log_focal, information = focal_evidence(flow, size, depth, wrong, trans, quat, 1, RefineConfig())
    assert abs(float(log_focal.exp()) / float(K[0, 0, 0]) - 1.0) < 0.04    # 104.5 px rendered
    assert float(information) > 0
    blank = torch.zeros(1, 1, *size)                                # untextured frames: no evidence
    flat = lucas_kanade(blank, blank, tuple(flow.shape[-2:])).repeat(6, 1, 1, 1)
    _, information = focal_evidence(flat, size, depth, wrong, trans, quat, 1, RefineConfig())
    assert float(information) == 0.0


def test_the_focal_stream_is_the_forgetting_information_mean_with_the_prior():
    log_focal = torch.log(torch.tensor([80.0, 80.0, 70.0, 0.0, 75.0]))   # frame 3: log 0 = -inf ...
    info = torch.tensor([0.0, 3.0, 1.0, 0.0, 6.0])                 # ... frames 0 and 3: no evidence
    L, I = torch.zeros(1), torch.zeros(1)
    acc, mean = 0.0, 0.0                                           # by hand, d = 0.75, prior 2
    for lf, i in zip(log_focal.tolist(), info.tolist(), strict=True):
        L, I = accumulate_focal(L, I, torch.tensor([lf]), torch.tensor([i]), 0.75)
        if i > 0 or acc > 0:
            acc, mean = 0.75 * acc + i, (0.75 * acc * mean + (i * lf if i > 0 else 0.0)) / (0.75 * acc + i)
        est = focal_estimate(L, I, torch.log(torch.tensor([100.0])), 2.0)
        assert abs(float(I) - acc) < 1e-5 and abs(float(L) - mean) < 1e-5
        assert abs(float(est) - (acc * mean + 2.0 * math.log(100.0)) / (acc + 2.0)) < 1e-5
    assert abs(acc - 7.828125) < 1e-9


def test_calibrate_focal_streams_to_the_rendered_focal_length_and_two_calls_equal_one():
    m, depth, K, poses = _frames()
    grid = (m.shape[-2] // CELL, m.shape[-1] // CELL)
    slots, frames = (2, 4, 6), range(6, 12)
    flow = torch.cat([lucas_kanade(m[t:t + 1], m[t - j:t - j + 1], grid) for t in frames for j in slots])
    truth = torch.stack([torch.linalg.inv(poses[t - j]) @ poses[t] for t in frames for j in slots])
    truth = truth.view(6, 3, 4, 4)
    trans, quat = _as_trunk(truth)
    wrong = K.clone()
    wrong[0, 0], wrong[1, 1] = 150.0, 150.0 * K[1, 1] / K[0, 0]
    Ks = wrong.expand(1, 6, 3, 3)
    cfg = dataclasses.replace(RefineConfig(), focal_prior=1.0, focal_every=1)
    args = (m.shape[-2:], depth[6:12], Ks, trans, quat, 1)
    out, L, I = calibrate_focal(flow, *args, torch.zeros(1), torch.zeros(1), 6, cfg)
    assert abs(float(out[0, -1, 0, 0]) / float(K[0, 0]) - 1.0) < 0.04       # 150 px -> ~104.5
    torch.testing.assert_close(out[0, :, 1, 1] / out[0, :, 0, 0], (K[1, 1] / K[0, 0]).expand(6))
    torch.testing.assert_close(out[..., :2, 2], Ks[..., :2, 2])
    first, L2, I2 = calibrate_focal(flow[:6], m.shape[-2:], depth[6:8], Ks[:, :2], trans[:2], quat[:2], 1,
                                    torch.zeros(1), torch.zeros(1), 6, cfg)
    second, L3, I3 = calibrate_focal(flow[6:], m.shape[-2:], depth[8:12], Ks[:, 2:], trans[2:], quat[2:], 1,
                                     L2, I2, 8, cfg)
    torch.testing.assert_close(torch.cat((first, second), 1), out)
    torch.testing.assert_close((L3, I3), (L, I))
    # measuring every 2nd frame: frames 7, 9, 11 keep the estimate of the frame before
    sparse, _, _ = calibrate_focal(flow, *args, torch.zeros(1), torch.zeros(1), 6,
                                   dataclasses.replace(cfg, focal_every=2))
    assert torch.equal(sparse[0, 1::2], sparse[0, 0::2]) and not torch.equal(sparse[0, 0], sparse[0, 2])


@pytest.mark.parametrize("key,value", [("inlier_px", 0.0), ("iterations", 0), ("min_inliers", 0),
                                       ("min_inlier_fraction", 1.5), ("max_shift", -1.0),
                                       ("max_turn_deg", float("inf")), ("focal_memory", 0),
                                       ("focal_every", 0),
                                       ("focal_prior", 0.0), ("max_focal_ratio", 1.0)])
def test_refine_settings_out_of_range_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=f"model.head.refine.*{key}"):
        load_model_config("tiny", head={"refine": {key: value}})


def test_clip_path_equals_streaming_step_with_the_refinement():
    seq = synthetic_sequence(SynthConfig(num_frames=24, trajectory="loop", camera_speed=0.015), 3)
    video = torch.stack([torch.from_numpy(seq[i].image).permute(2, 0, 1).float() / 255
                         for i in range(24)])[None]
    model = load_model(DEFAULT_CHECKPOINT).eval()
    model.set_refine(True)
    with torch.no_grad():
        clip = model(video)
        state = model.init_state(1)
        steps = []
        for t in range(video.shape[1]):
            out, state = model.step(video[:, t], state)
            steps.append(out["cam2world"])
        model.set_refine(False)
        plain = model(video)
    assert (clip["cam2world"][0] - torch.stack(steps, 1)[0]).abs().max() < 1e-4
    assert (plain["cam2world"] - clip["cam2world"]).abs().max() > 1e-3   # the refinement did act
