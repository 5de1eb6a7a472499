"""Window-pose refinement: a perturbed trunk pose is pulled to the rendered motion, a wild one and
an untextured pair are left alone; the self-calibration finds the rendering focal length and the
contrast taken from the depth, and streams them in closed form; the settings are checked; clip ==
step with both on."""

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
    calibration_estimate,
    calibration_evidence,
    contrast_depth,
    refine_window_poses,
    self_calibrate,
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


def _log_focal(information, vector):
    """The evidence's own estimate (no prior) of a frame: I^-1 h."""
    return torch.linalg.solve(information, vector[..., None])[..., 0]


@pytest.mark.parametrize("start", [70.0, 95.0, 130.0])
def test_calibration_evidence_finds_the_focal_length_the_frames_were_rendered_with(start):
    flow, size, depth, K, truth = _pairs(6, (1, 2, 3, 4, 5, 6))     # rotations of 0.7 .. 4.1 degrees
    trans, quat = _as_trunk(truth)
    wrong = K.clone()
    wrong[:, 0, 0] = wrong[:, 1, 1] = start
    info, vector = calibration_evidence(flow, size, depth, wrong, torch.zeros(1), trans, quat, 1,
                                        RefineConfig(), fit_contrast=False)
    assert float(info[0, 0, 0]) > 0 and float(info[0, 1].abs().sum()) == 0.0
    assert abs(math.exp(float(vector[0, 0] / info[0, 0, 0])) / float(K[0, 0, 0]) - 1.0) < 0.04   # 104.5 px
    blank = torch.zeros(1, 1, *size)                                # untextured frames: no evidence
    flat = lucas_kanade(blank, blank, tuple(flow.shape[-2:])).repeat(6, 1, 1, 1)
    info, vector = calibration_evidence(flat, size, depth, wrong, torch.zeros(1), trans, quat, 1,
                                        RefineConfig())
    assert float(info.abs().sum()) == 0.0 and float(vector.abs().sum()) == 0.0


def test_calibration_evidence_finds_the_contrast_taken_from_the_depth():
    # the rendered depth with its log spread halved (a depth head's near-and-far-too-alike): the
    # evidence puts the contrast back at ~2 and the focal length at the rendered one
    flow, size, depth, K, truth = _pairs(6, (1, 2, 3, 4, 5, 6))
    trans, quat = _as_trunk(truth)
    flat = contrast_depth(depth, torch.log(torch.tensor([0.5])))
    median = depth.flatten(1).median(1).values
    torch.testing.assert_close(flat.flatten(1).median(1).values, median)
    torch.testing.assert_close(contrast_depth(flat, torch.log(torch.tensor([2.0]))), depth)
    info, vector = calibration_evidence(flow, size, flat, K, torch.zeros(1), trans, quat, 1,
                                        dataclasses.replace(RefineConfig(), iterations=10))
    log_focal, log_contrast = _log_focal(info, vector)[0].tolist()
    assert abs(log_contrast - math.log(2.0)) < 0.15
    assert abs(math.exp(log_focal) / float(K[0, 0, 0]) - 1.0) < 0.05
    # a fit of the focal length alone on that depth lands elsewhere: the contrast is what moves it
    info_f, vector_f = calibration_evidence(flow, size, flat, K, torch.zeros(1), trans, quat, 1,
                                            dataclasses.replace(RefineConfig(), iterations=10),
                                            fit_contrast=False)
    alone = math.exp(float(vector_f[0, 0] / info_f[0, 0, 0])) / float(K[0, 0, 0])
    assert abs(alone - 1.0) > 2 * abs(math.exp(log_focal) / float(K[0, 0, 0]) - 1.0)


def test_the_calibration_stream_is_the_forgetting_information_filter_with_the_prior():
    rng = torch.Generator().manual_seed(0)
    prior = torch.diag(torch.tensor([2.0, 5.0]))
    mu = torch.tensor([[math.log(100.0), 0.0]])
    I, h = torch.zeros(1, 2, 2), torch.zeros(1, 2)
    I_hand, h_hand = torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    assert torch.allclose(calibration_estimate(I, h, mu, prior), mu)        # no evidence: the prior
    for _ in range(5):
        A = torch.randn(2, 2, generator=rng)
        info = A @ A.T                                                       # positive semi-definite
        theta = torch.tensor([math.log(80.0), 0.7]) + 0.1 * torch.randn(2, generator=rng)
        I, h = 0.75 * I + info, 0.75 * h + info @ theta
        I_hand = 0.75 * I_hand + info.double()
        h_hand = 0.75 * h_hand + info.double() @ theta.double()
        est = calibration_estimate(I, h, mu, prior)[0].double()
        by_hand = torch.linalg.solve(I_hand + prior.double(), h_hand + prior.double() @ mu[0].double())
        assert torch.allclose(est, by_hand, atol=1e-5)


def test_self_calibrate_streams_to_the_rendered_focal_length_and_two_calls_equal_one():
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
    cfg = dataclasses.replace(RefineConfig(), focal_prior=1.0, contrast_prior=1.0, focal_every=1)
    zeros = (torch.zeros(1, 2, 2), torch.zeros(1, 2))
    args = (m.shape[-2:], depth[6:12], Ks, trans, quat, 1)
    out, contrast, I, h = self_calibrate(flow, *args, *zeros, 6, cfg)
    assert abs(float(out[0, -1, 0, 0]) / float(K[0, 0]) - 1.0) < 0.04       # 150 px -> ~104.5
    assert abs(float(contrast[0, -1])) < 0.15                              # the rendered depth: ~1
    torch.testing.assert_close(out[0, :, 1, 1] / out[0, :, 0, 0], (K[1, 1] / K[0, 0]).expand(6))
    torch.testing.assert_close(out[..., :2, 2], Ks[..., :2, 2])
    first, c2, I2, h2 = self_calibrate(flow[:6], m.shape[-2:], depth[6:8], Ks[:, :2], trans[:2], quat[:2], 1,
                                       *zeros, 6, cfg)
    second, c3, I3, h3 = self_calibrate(flow[6:], m.shape[-2:], depth[8:12], Ks[:, 2:], trans[2:], quat[2:],
                                        1, I2, h2, 8, cfg)
    torch.testing.assert_close(torch.cat((first, second), 1), out)
    torch.testing.assert_close(torch.cat((c2, c3), 1), contrast)
    torch.testing.assert_close((I3, h3), (I, h))
    # measuring every 2nd frame: frames 7, 9, 11 keep the estimate of the frame before
    sparse, _, _, _ = self_calibrate(flow, *args, *zeros, 6, dataclasses.replace(cfg, focal_every=2))
    assert torch.equal(sparse[0, 1::2], sparse[0, 0::2]) and not torch.equal(sparse[0, 0], sparse[0, 2])
    # intrinsics given: K comes back as given, the contrast is still estimated
    known, contrast_k, I_k, _ = self_calibrate(flow, m.shape[-2:], depth[6:12], K.expand(1, 6, 3, 3), trans,
                                               quat, 1, *zeros, 6, cfg, fit_focal=False)
    assert torch.equal(known, K.expand(1, 6, 3, 3)) and float(I_k[0, 0, 0]) == 0.0
    assert float(I_k[0, 1, 1]) > 0 and abs(float(contrast_k[0, -1])) < 0.15


@pytest.mark.parametrize("key,value", [("inlier_px", 0.0), ("iterations", 0), ("min_inliers", 0),
                                       ("min_inlier_fraction", 1.5), ("max_shift", -1.0),
                                       ("max_turn_deg", float("inf")), ("focal_memory", 0),
                                       ("focal_every", 0),
                                       ("focal_prior", 0.0), ("max_focal_ratio", 1.0),
                                       ("contrast_prior", float("inf")), ("max_contrast_ratio", 0.5)])
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
