"""Long pose slots (``head.long_pose_offsets``): pose slots beyond the local window.

Checked against plain loops and hand-made cases: the slot offsets and their config errors, the
readout's candidates ``A[t - d] @ R[t, d]``, the clip path against the step loop, that with no
memory a long slot cannot see frames beyond the stacked local windows (and with memory it does),
and that truncated backprop gives every segment the ground truth of its long pairs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from recon.errors import CheckpointError, ConfigError
from recon.geometry import rotmat_to_quat_wxyz
from recon.model import build_model
from recon.model.config import MAX_LONG_POSE_OFFSET, load_model_config, slot_offsets
from recon.model.readout import empty_pose_history, stream_pose_readout
from recon.train.losses import window_pairs_gt
from recon.train.tbptt import TBPTTConfig, run_segments

OFFSETS = [4, 6]        # window 3: window slots 1, 2; long slots 4 and 6


def _cfg(memory_type: str = "gla", long=OFFSETS, depth: int = 2) -> dict:
    return dict(name="test", image_size=(32, 48), patch_size=16, dim=48, depth=depth, num_heads=2, window=3,
                num_register_tokens=2, memory=dict(type=memory_type, depths=[depth - 1]),
                head=dict(features=16, levels=list(range(depth)), camera_hidden=32, long_pose_offsets=long))


def _model(memory_type: str = "gla", long=OFFSETS):
    torch.manual_seed(0)
    return build_model(_cfg(memory_type, long)).eval()


def _video(T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 32, 96, generator=g)
    return torch.stack([torch.roll(base, shifts=2 * t, dims=-1)[..., :48] for t in range(T)], 1)


def test_slot_offsets_and_config_errors():
    cfg = load_model_config(_cfg())
    assert slot_offsets(cfg.head) == (1, 2, 4, 6)
    assert slot_offsets(load_model_config(_cfg(long=[])).head) == (1, 2)
    for bad in ([2, 6], [6, 4], [4, 4], [MAX_LONG_POSE_OFFSET + 1]):
        with pytest.raises(ConfigError, match=r"model\.head\.long_pose_offsets .*strictly increasing frame "
                                              r"offsets in pose_slots \+ 1 = 3 \.\. 256"):
            load_model_config(_cfg(long=bad))
    # off: the architecture signature of models exported before the option existed is unchanged
    plain = load_model_config(_cfg(long=[]))
    d = plain.to_dict()
    d["head"].pop("long_pose_offsets")
    assert load_model_config(d).signature() == plain.signature() != cfg.signature()


def test_pose_tokens_state_and_outputs_grow_with_the_long_slots():
    model, plain = _model(), _model(long=[])
    assert model.slot_offsets == (1, 2, 4, 6)
    assert model.aggregator.embed.num_pose == 4 and plain.aggregator.embed.num_pose == 2
    state = model.init_state(1)
    assert state.poses.cam2world.shape == (1, 6, 4, 4)           # the poses of the last max(d) frames
    assert state.poses.frames.shape[1] == 2                        # pair-flow frames: window slots only
    with torch.no_grad():
        out = model(_video(3))
    assert out["window_cam2world"].shape == (1, 3, 4, 4, 4)


def test_a_checkpoint_with_long_slots_refuses_a_config_without(tmp_path):
    from recon.checkpoint import load_model, save_weights

    path = save_weights(_model(), tmp_path / "long")
    with pytest.raises(CheckpointError, match=r"trained with head\.long_pose_offsets \[4, 6\], the requested "
                                              r"model config has \[\]"):
        load_model(path, model_config=_cfg(long=[]))


def _walk(T: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    poses = [torch.eye(4, dtype=torch.float64)]
    for _ in range(T - 1):
        step = torch.eye(4, dtype=torch.float64)
        step[:3, :3] = torch.from_numpy(Rotation.from_rotvec(rng.normal(0, 0.05, 3)).as_matrix())
        step[:3, 3] = torch.from_numpy(rng.normal(0, 0.1, 3))
        poses.append(poses[-1] @ step)
    return torch.stack(poses)


def _slot_truth(traj: torch.Tensor, offsets) -> tuple[torch.Tensor, torch.Tensor]:
    """Translation and wxyz quaternion of inv(traj[t - d]) @ traj[t] per frame and offset (a loop)."""
    T, P = traj.shape[0], len(offsets)
    trans = torch.zeros(1, T, P, 3, dtype=torch.float64)
    quat = torch.zeros(1, T, P, 4, dtype=torch.float64)
    quat[..., 0] = 1.0
    for t in range(T):
        for k, d in enumerate(offsets):
            if t - d >= 0:
                rel = torch.linalg.inv(traj[t - d]) @ traj[t]
                trans[0, t, k], quat[0, t, k] = rel[:3, 3], rotmat_to_quat_wxyz(rel[:3, :3])
    return trans, quat


def _history(slots: int, reach: int):
    h = empty_pose_history(1, slots, "cpu", reach=reach)
    h.cam2world, h.log_scale = h.cam2world.double(), h.log_scale.double()
    return h


def test_readout_anchors_a_long_candidate_on_the_pose_of_frame_t_minus_d():
    """Offsets (1, 2, 5): exact slot poses give the trajectory and a history of the last 5 poses;
    with both window slots lost (non-finite) from frame 5 on, the long candidate alone,
    A[t - 5] @ R[t, 5], keeps the trajectory exact (no fallback to the previous pose)."""
    offsets = (1, 2, 5)
    traj = _walk(16, seed=4)
    trans, quat = _slot_truth(traj, offsets)
    raw = torch.zeros(1, 16, dtype=torch.float64)
    cam2world, _, _, history = stream_pose_readout(raw, trans, quat, _history(2, 5), 0, 0.05, None, offsets)
    torch.testing.assert_close(cam2world[0], traj, atol=1e-9, rtol=0)
    assert history.cam2world.shape == (1, 5, 4, 4)
    torch.testing.assert_close(history.cam2world[0], traj.flip(0)[:5], atol=1e-9, rtol=0)
    only_long = trans.clone()
    only_long[0, 5:, :2] = float("nan")                       # window slots lost from frame 5 on
    cam2world, _, _, history = stream_pose_readout(raw, only_long, quat, _history(2, 5), 0, 0.05, None,
                                                   offsets)
    torch.testing.assert_close(cam2world[0], traj, atol=1e-9, rtol=0)
    assert int(history.fallbacks) == 0
    with pytest.raises(ValueError, match="pose history of max"):
        stream_pose_readout(raw, trans, quat, _history(2, 2), 0, 0.05, None, offsets)


@pytest.mark.parametrize("memory_type", ["gla", "none"])
def test_clip_path_equals_the_step_loop_and_segments(memory_type):
    model = _model(memory_type)
    video = _video(9)
    with torch.no_grad():
        full = model(video)
        state, steps = model.init_state(1), []
        for t in range(9):
            out, state = model.step(video[:, t], state)
            steps.append(out)
        a, mid = model.run(video[:, :5], model.init_state(1))
        b, _ = model.run(video[:, 5:], mid)
    for key, value in full.items():
        stepped = torch.stack([o[key] for o in steps], 1)
        torch.testing.assert_close(stepped, value, rtol=1e-4, atol=1e-5, msg=key)
        torch.testing.assert_close(torch.cat((a[key], b[key]), 1), value, rtol=1e-4, atol=1e-5, msg=key)


def test_without_memory_a_long_slot_sees_only_the_stacked_local_windows():
    """depth 2, window 3: frame 8's tokens depend on frames 4 .. 8 alone without memory, so its
    long slots (offsets 4, 6) cannot tell frames 0 .. 3 apart (rotations: no metric scale in them);
    with a memory layer they can: the long slot's only way back."""
    video = _video(9)
    changed = video.clone()
    changed[:, :4] = 1.0 - changed[:, :4]
    moved = {}
    for memory_type in ("none", "gla"):
        model = _model(memory_type)
        with torch.no_grad():
            a, b = model(video)["window_cam2world"], model(changed)["window_cam2world"]
        moved[memory_type] = float((a[0, 8, 2:, :3, :3] - b[0, 8, 2:, :3, :3]).abs().max())
    assert moved["none"] == 0.0
    assert moved["gla"] > 1e-7


def test_every_segment_gets_the_ground_truth_of_its_long_pairs():
    """Truncated backprop in segments of 2: the pairs each segment's loss sees are those of the
    whole clip, long pairs across segment boundaries included (the poses before a segment reach
    back max(d) frames)."""
    model = _model()
    T = 9
    traj = _walk(T, seed=5).float()
    batch = {"video": _video(T), "K": torch.eye(3).expand(1, T, 3, 3), "cam2world": traj[None]}
    whole, whole_valid = window_pairs_gt(batch["cam2world"], None, model.slot_offsets)
    seen = []

    def loss_fn(out, seg, first):
        rel, valid = window_pairs_gt(seg["cam2world"], seg["previous_cam2world"], seg["slot_offsets"])
        seen.append((rel, valid))
        assert out["window_cam2world"].shape[2] == len(seg["slot_offsets"])
        return {"loss": out["depth"].mean()}

    with torch.no_grad():
        run_segments(model, batch, TBPTTConfig(2, 1), loss_fn)
    rel = torch.cat([r for r, _ in seen], 1)
    valid = torch.cat([v for _, v in seen], 0)
    assert torch.equal(valid, whole_valid) and int(valid[:, 3].sum()) == T - 6
    torch.testing.assert_close(rel[:, valid], whole[:, whole_valid], atol=1e-5, rtol=1e-5)
