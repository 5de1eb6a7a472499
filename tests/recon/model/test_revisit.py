"""Keyframe revisits: correspondences vs the rendered geometry, corrections vs the ground truth,
the bank's insertion and replacement rules, and the clip path == the streaming step."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from data.synth.sequence import SynthConfig, synthetic_sequence
from recon.checkpoint import DEFAULT_CHECKPOINT, load_model
from recon.errors import ConfigError
from recon.geometry import interpolate_poses, rotation_geodesic
from recon.model import load_model_config
from recon.model.config import RevisitConfig
from recon.model.embed import IMAGENET_MEAN, IMAGENET_STD
from recon.model.motion_encoder import motion_frames
from recon.model.revisit import (
    cell_correspondences,
    correct_at_revisit,
    empty_keyframe_bank,
    insert_keyframe,
    median_depth,
    select_keyframe,
    thumbnails,
)


@lru_cache(maxsize=1)
def _frames():
    """Frames 0..5 of a static synthetic loop (images, GT depth, K, cam2world)."""
    seq = synthetic_sequence(SynthConfig(num_frames=40, trajectory="loop", num_dynamic=0, shadows=False), 11)
    out = [seq[i] for i in range(6)]
    images = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1).float() / 255 for f in out])
    depth = torch.stack([torch.from_numpy(f.depth) for f in out])
    poses = torch.stack([torch.from_numpy(f.cam2world).float() for f in out])
    return images, depth, torch.from_numpy(out[0].K).float(), poses


def _motion(images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return motion_frames((images - mean) / std, 1)


def _bank_with(frame: torch.Tensor, pose: torch.Tensor, index: int, capacity: int = 4):
    bank = empty_keyframe_bank(1, capacity, tuple(frame.shape), "cpu")
    return insert_keyframe(bank, frame[None], thumbnails(frame[None]), pose[None], torch.tensor([2.0]),
                           index, torch.ones(1, dtype=torch.bool), RevisitConfig())


def test_cell_correspondences_follow_the_rendered_motion():
    images, depth, K, poses = _frames()
    m = _motion(images)
    X, x, usable = cell_correspondences(m[4:5], m[0:1], depth[4:5], K[None], pool=1)
    T = torch.linalg.inv(poses[0]) @ poses[4]                   # camera 4 -> camera 0
    P = X[0] @ T[:3, :3].T + T[:3, 3]
    proj = (P[:, :2] / P[:, 2:]) * torch.stack((K[0, 0], K[1, 1])) + K[:2, 2]
    err = (proj - x[0]).norm(dim=-1)[usable[0]]
    assert usable.sum() >= 50                                   # of 12 x 16 cells (walls are flat)
    flow = (x[0] - _cell_pixels())[usable[0]].norm(dim=-1)
    assert float(flow.median()) > 1.0                           # the frames do move
    assert float(err.median()) < 0.35


def _cell_pixels() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(12) * 8 + 3.5, torch.arange(16) * 8 + 3.5, indexing="ij")
    return torch.stack((xs, ys), -1).reshape(-1, 2)


def _drift(pose: torch.Tensor, shift: float, degrees: float) -> torch.Tensor:
    D = torch.eye(4)
    D[:3, :3] = torch.from_numpy(Rotation.from_rotvec([0.0, np.radians(degrees), 0.0]).as_matrix()).float()
    D[:3, 3] = torch.tensor([shift, 0.0, 0.0])
    return D @ pose


@pytest.mark.parametrize("gain", [1.0, 0.3])
def test_a_revisit_pulls_a_drifted_pose_to_the_keyframe_measurement(gain):
    images, depth, K, poses = _frames()
    m = _motion(images)
    bank = _bank_with(m[0], poses[0], index=0)
    drifted = _drift(poses[3], 0.3, 20.0)[None]                 # far outside max_correction
    d3 = median_depth(depth[3:4])
    cfg = dataclasses.replace(RevisitConfig(), gain=gain, revisit_similarity=0.5)
    pose, new_bank, settled = correct_at_revisit(drifted, bank, m[3:4], thumbnails(m[3:4]), depth[3:4],
                                                 d3, K[None], frame_index=501, window=7, pool=1,
                                                 cfg=cfg)
    assert int(new_bank.corrections) == 1 and int(new_bank.used[0, 0]) == 501
    full, _, _ = correct_at_revisit(drifted, bank, m[3:4], thumbnails(m[3:4]), depth[3:4], d3, K[None], 501,
                                    7, 1, dataclasses.replace(cfg, gain=1.0))
    # gain 1: the measured pose, close to the truth
    assert float((full[0, :3, 3] - poses[3, :3, 3]).norm()) < 0.03
    assert float(torch.rad2deg(rotation_geodesic(full[0, :3, :3], poses[3, :3, :3]))) < 1.0
    # any gain: that far along the geodesic from the odometry
    assert torch.allclose(pose, interpolate_poses(drifted, full, gain), atol=1e-5)
    assert not bool(settled)                                    # a 20-degree correction: not settled


def test_frames_between_measurements_carry_the_measured_correction():
    """At frame 501 (501 % 3 == 0) the fit measures C; frames 502 and 503 are not measured but move
    toward C @ rel (rel: the odometry since, here a known small motion) by the gain, by hand; the
    next measurement frame that finds nothing drops what was held."""
    images, depth, K, poses = _frames()
    m = _motion(images)
    bank = _bank_with(m[0], poses[0], index=0)
    drifted = _drift(poses[3], 0.3, 20.0)[None]
    d3 = median_depth(depth[3:4])
    cfg = dataclasses.replace(RevisitConfig(), gain=0.3, revisit_similarity=0.5, measure_every=3)
    args = (m[3:4], thumbnails(m[3:4]), depth[3:4], d3, K[None])
    measured, _, _ = correct_at_revisit(drifted, bank, *args, 501, 7, 1, dataclasses.replace(cfg, gain=1.0))
    corrected, bank, _ = correct_at_revisit(drifted, bank, *args, 501, 7, 1, cfg)
    assert bool(bank.held_valid) and int(bank.corrections) == 1
    rel = _drift(torch.eye(4), 0.05, 3.0)                       # the camera moves on, then stays
    target = measured @ rel                                     # where the measurement puts it
    pose = corrected @ rel                                      # the odometry after the correction
    start = (target[0, :3, 3] - pose[0, :3, 3]).norm()
    for n in (502, 503):
        reference = interpolate_poses(pose, target, 0.3)
        pose, bank, _ = correct_at_revisit(pose, bank, *args, n, 7, 1, cfg)
        assert torch.allclose(pose, reference, atol=1e-4)
    assert int(bank.corrections) == 3
    # each held step removes the gain's share of what remains, as a measured one would
    left = float((target[0, :3, 3] - pose[0, :3, 3]).norm())
    assert left == pytest.approx(0.7 ** 2 * float(start), rel=1e-3)
    # frame 504 measures; an unlike frame finds no keyframe and nothing stays held
    noise = torch.rand(1, 1, 96, 128, generator=torch.Generator().manual_seed(0)) * 4 - 2
    out, bank, _ = correct_at_revisit(pose, bank, noise, thumbnails(noise), depth[3:4], d3, K[None],
                                      504, 7, 1, cfg)
    assert torch.equal(out, pose) and not bool(bank.held_valid)
    out, bank, _ = correct_at_revisit(pose, bank, *args, 505, 7, 1, cfg)
    assert torch.equal(out, pose) and int(bank.corrections) == 3


def test_a_bounded_match_refuses_a_large_correction_and_unlike_frames_are_not_matched():
    images, depth, K, poses = _frames()
    m = _motion(images)
    bank = _bank_with(m[0], poses[0], index=0)
    drifted = _drift(poses[3], 0.3, 20.0)[None]
    d3 = median_depth(depth[3:4])
    strict = dataclasses.replace(RevisitConfig(), revisit_similarity=1.0, search_distance=10.0,
                                 search_deg=90.0)
    pose, new_bank, _ = correct_at_revisit(drifted, bank, m[3:4], thumbnails(m[3:4]), depth[3:4], d3, K[None],
                                           501, 7, 1, strict)
    assert torch.equal(pose, drifted) and int(new_bank.corrections) == 0
    noise = torch.rand(1, 1, 96, 128, generator=torch.Generator().manual_seed(0)) * 4 - 2
    loose = dataclasses.replace(RevisitConfig(), min_similarity=-1.0, revisit_similarity=-1.0)
    pose, new_bank, _ = correct_at_revisit(drifted, bank, noise, thumbnails(noise), depth[3:4], d3, K[None],
                                           501, 7, 1, loose)
    assert torch.equal(pose, drifted) and int(new_bank.corrections) == 0


def test_select_keyframe_takes_the_oldest_near_the_best_look_and_skips_the_window():
    cfg = RevisitConfig(min_age=0)
    bank = empty_keyframe_bank(1, 4, (1, 96, 128), "cpu")
    thumb = torch.zeros(1, 4, 192)
    thumb[0, :, 0] = torch.tensor([0.90, 0.95, 0.99, 1.0])       # similarity to the query below
    thumb[0, :, 1] = (1 - thumb[0, :, 0] ** 2).sqrt()
    far = torch.eye(4).repeat(1, 4, 1, 1)
    far[0, 1, :3, 3] = torch.tensor([5.0, 0.0, 0.0])           # outside the search radius
    bank = dataclasses.replace(bank, thumbnails=thumb, cam2world=far, index=torch.tensor([[3, 5, 9, 40]]))
    query = torch.zeros(1, 192)
    query[0, 0] = 1.0
    eye, d = torch.eye(4)[None], torch.tensor([2.0])
    slot, found, similarity = select_keyframe(bank, query, eye, d, 45, 7, cfg)
    # slot 3 is inside the window (index 40 >= 45 - 7); of 0.90, 0.95 (far, but above
    # revisit_similarity) and 0.99, those within 0.05 of the best are 0.95 and 0.99 -> the oldest, slot 1
    assert bool(found) and int(slot) == 1 and abs(float(similarity) - 0.95) < 1e-6
    # by default only keyframes older than min_age (150) frames correct a pose
    _, found, _ = select_keyframe(bank, query, eye, d, 45, 7, RevisitConfig())
    assert not bool(found)


def test_insert_keyframe_spaces_keyframes_and_replaces_the_least_recently_used():
    cfg = RevisitConfig()                                      # spacing 0.15 * d, 10 degrees
    frame = torch.zeros(1, 1, 96, 128)
    depth = median_depth(torch.full((1, 8, 8), 2.0))
    settled = torch.ones(1, dtype=torch.bool)
    bank = empty_keyframe_bank(1, 2, (1, 96, 128), "cpu")

    def at(x: float) -> torch.Tensor:
        T = torch.eye(4)[None].clone()
        T[0, 0, 3] = x
        return T

    bank = insert_keyframe(bank, frame, thumbnails(frame), at(0.0), depth, 0, settled, cfg)
    bank = insert_keyframe(bank, frame, thumbnails(frame), at(0.2), depth, 1, settled, cfg)  # < 0.3: near
    assert bank.index.tolist() == [[0, -1]]
    bank = insert_keyframe(bank, frame, thumbnails(frame), at(0.5), depth, 2, settled, cfg)
    assert bank.index.tolist() == [[0, 2]]
    bank = dataclasses.replace(bank, used=torch.tensor([[7, 2]]))                             # 0 matched at 7
    bank = insert_keyframe(bank, frame, thumbnails(frame), at(1.0), depth, 8, ~settled, cfg)  # mid-correction
    assert bank.index.tolist() == [[0, 2]]
    bank = insert_keyframe(bank, frame, thumbnails(frame), at(1.0), depth, 9, settled, cfg)
    assert bank.index.tolist() == [[0, 9]] and float(bank.cam2world[0, 1, 0, 3]) == 1.0


@pytest.mark.parametrize("key,value", [("keyframes", 0), ("gain", 0.0), ("gain", 1.5), ("min_inliers", 3),
                                       ("revisit_similarity", 1.2), ("spacing", -1.0), ("measure_every", 0)])
def test_revisit_settings_out_of_range_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=f"model.head.revisit.*{key}"):
        load_model_config("tiny", head={"revisit": {key: value}})


def _loop_video(frames: int) -> torch.Tensor:
    seq = synthetic_sequence(SynthConfig(num_frames=frames, trajectory="loop", camera_speed=0.015), 3)
    images = [torch.from_numpy(seq[i].image).permute(2, 0, 1).float() / 255 for i in range(frames)]
    return torch.stack(images)[None]


def test_clip_path_equals_streaming_step_with_revisit_corrections():
    model = load_model(DEFAULT_CHECKPOINT).eval()
    model.cfg.head.revisit.min_age = 0    # corrections within a short clip: the contract, not the tuning
    video = _loop_video(64)
    with torch.no_grad():
        clip, clip_state = model.run(video, model.init_state(1))
        state = model.init_state(1)
        size = state.nbytes()
        steps = []
        for t in range(video.shape[1]):
            out, state = model.step(video[:, t], state)
            steps.append(out["cam2world"])
            assert state.nbytes() == size                       # the keyframe bank has a fixed size
    corrections = int(state.poses.keyframes.corrections)
    assert corrections >= 3 and corrections == int(clip_state.poses.keyframes.corrections)
    assert torch.equal(state.poses.keyframes.index, clip_state.poses.keyframes.index)
    assert (clip["cam2world"][0] - torch.stack(steps, 1)[0]).abs().max() < 1e-4
    # without the correction the same frames give other poses: the corrections did act
    model.cfg.head.revisit.enabled = False
    with torch.no_grad():
        plain = model(video)
    assert (plain["cam2world"] - clip["cam2world"]).abs().max() > 1e-3


def test_non_finite_depth_never_reaches_the_pose():
    images, depth, K, poses = _frames()
    m = _motion(images)
    bank = _bank_with(m[0], poses[0], index=0)
    drifted = _drift(poses[3], 0.3, 20.0)[None]
    bad = depth[3:4].clone()
    bad[:, :48] = float("nan")
    bad[:, 48:] = float("inf")
    cfg = dataclasses.replace(RevisitConfig(), revisit_similarity=0.5)
    pose, new_bank, _ = correct_at_revisit(drifted, bank, m[3:4], thumbnails(m[3:4]), bad, median_depth(bad),
                                           K[None], 501, 7, 1, cfg)
    assert torch.equal(pose, drifted) and int(new_bank.corrections) == 0
