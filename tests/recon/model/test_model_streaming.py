"""Streaming invariants: forward == step loop for every memory type, constant state, long-run stability."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from recon.model import build_model, load_model_config
from recon.model.state import detach_state
from tests.numerics import assert_rel_close

# Every memory type, and each computational form of the TTT / elastic layers.
MEMORY_VARIANTS = [
    pytest.param("none", {}, id="none"),
    pytest.param("gla", {}, id="gla"),
    pytest.param("elastic", {"form": "parallel"}, id="elastic-reduced"),
    pytest.param("elastic", {"form": "sequential"}, id="elastic-fsm"),
    pytest.param("ttt", {"form": "sequential"}, id="ttt-sequential"),
    pytest.param("ttt", {"form": "parallel", "update_hidden": False, "weight_norm": False, "muon_steps": 0},
                 id="ttt-parallel"),
    pytest.param("causal_attention", {}, id="causal_attention"),
]
# GLA's default retention (gate / 16, gate bias up to 6) has a memory of ~6,600 tokens, i.e. ~660
# frames of the 10-token toy model, and the fast-weight memories' default retention horizons reach
# 512 frames: longer than the 300 frames a default test can afford. The default test uses the same
# layers with shorter memories (GLA gate_normalizer=1, ~400 tokens; retention horizons 2-32 frames)
# so saturation shows within 300 frames; the presets' retention is checked over 2,000 frames of the
# tiny model (52 tokens per frame) by the slow test below.
SHORT_MEMORY = {"gla": {"gate_normalizer": 1.0}, "elastic-reduced": {"retention_frames": [2, 32]},
                "elastic-fsm": {"retention_frames": [2, 32]}, "ttt-parallel": {"retention_frames": [2, 32]}}
BOUNDED_VARIANTS = [
    pytest.param(p.values[0], {**p.values[1], **SHORT_MEMORY.get(p.id, {})}, id=p.id)
    for p in MEMORY_VARIANTS[:-1]
]
KEYS = ("depth", "depth_conf", "K", "cam2world", "window_cam2world", "metric_scale", "world_points",
        "pose_enc")


def small_model(memory_type: str, options: dict, window: int = 3, depth: int = 2):
    """Full architecture at toy sizes: 32x48 frames, window - 1 + 9 tokens per frame, width 48."""
    torch.manual_seed(0)
    cfg = dict(name="test", image_size=(32, 48), patch_size=16, dim=48, depth=depth, num_heads=2,
               window=window, num_register_tokens=2,
               memory=dict(type=memory_type, depths=list(range(depth)), options=options),
               head=dict(features=16, levels=list(range(depth)), camera_hidden=32))
    return build_model(cfg).eval()


def moving_video(B: int, T: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    """A textured pattern that slides and brightens over time (frames depend on each other)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(B, 3, H, 2 * W, generator=g)
    frames = [torch.roll(base, shifts=t, dims=-1)[..., :W] * (0.8 + 0.2 * math.sin(0.3 * t))
              for t in range(T)]
    return torch.stack(frames, 1).clamp(0, 1)


def state_tensor_bytes(obj) -> int:
    """Bytes of all tensors reachable from obj (written here, independent of StreamState.nbytes)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(state_tensor_bytes(v) for v in obj)
    if isinstance(obj, dict):
        return sum(state_tensor_bytes(v) for v in obj.values())
    if hasattr(obj, "__dict__"):
        return sum(state_tensor_bytes(v) for v in vars(obj).values())
    return 0


def memory_tensors(state) -> list[torch.Tensor]:
    out = []

    def walk(o):
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        elif dataclasses.is_dataclass(o):
            for f in dataclasses.fields(o):
                walk(getattr(o, f.name))

    walk(state.memory)
    return out


@pytest.mark.parametrize("window", [2, 3], ids=["W2", "W3"])
@pytest.mark.parametrize("memory_type, options", MEMORY_VARIANTS)
def test_forward_equals_step_loop(memory_type, options, window):
    model = small_model(memory_type, options, window)
    B, T = 2, 7
    video = moving_video(B, T, 32, 48)
    with torch.no_grad():
        full = model(video)
        state = model.init_state(B)
        steps = []
        for t in range(T):
            out, state = model.step(video[:, t], state)
            steps.append(out)
    assert state.frame_index == T
    for key in KEYS:
        assert_rel_close(full[key], torch.stack([o[key] for o in steps], 1), 1e-4, key)
    # The comparison is not vacuous: a later frame depends on earlier ones through the window / memory.
    changed = video.clone()
    changed[:, 0] = 1.0 - changed[:, 0]
    with torch.no_grad():
        other = model(changed)
    assert (other["depth"][:, 1] - full["depth"][:, 1]).abs().max() > 1e-6


@pytest.mark.parametrize("memory_type, options", MEMORY_VARIANTS)
def test_clip_split_into_segments_carries_the_state(memory_type, options):
    model = small_model(memory_type, options, window=3)
    video = moving_video(1, 8, 32, 48, seed=1)
    with torch.no_grad():
        full = model(video)
        a, state = model.run(video[:, :3], model.init_state(1))
        b, state = model.run(video[:, 3:], detach_state(state))
    for key in KEYS:
        assert_rel_close(full[key], torch.cat((a[key], b[key]), 1), 1e-4, key)


@pytest.mark.parametrize("memory_type, options", MEMORY_VARIANTS)
def test_state_bytes_constant_except_causal_attention(memory_type, options):
    model = small_model(memory_type, options, window=3)
    video = moving_video(1, 24, 32, 48)
    state = model.init_state(1)
    sizes = {}
    with torch.no_grad():
        for t in range(300):
            _, state = model.step(video[:, t % 24], state)
            if t + 1 in (10, 300):
                sizes[t + 1] = (state_tensor_bytes(state), state.nbytes())
    (indep10, own10), (indep300, own300) = sizes[10], sizes[300]
    assert own10 == indep10 and own300 == indep300
    if memory_type == "causal_attention":
        # K and V of 11 tokens (2 pose, 1 metric, 2 registers, 6 patches) x 2 heads x 24 channels,
        # float32, per frame, per memory layer (2 layers).
        grow_per_frame = 2 * 2 * 11 * 2 * 24 * 4
        assert own300 - own10 == 290 * grow_per_frame
    else:
        assert own300 == own10


@pytest.mark.parametrize("memory_type, options", BOUNDED_VARIANTS)
def test_long_stream_stays_finite_with_bounded_state(memory_type, options):
    """300 frames of the toy model: outputs finite, memory state norms stop growing."""
    model = small_model(memory_type, options, window=3)
    video = moving_video(1, 40, 32, 48, seed=2)
    state = model.init_state(1)
    norms = []
    with torch.no_grad():
        for t in range(300):
            out, state = model.step(video[:, t % 40], state)
            assert all(torch.isfinite(out[k]).all() for k in KEYS), f"non-finite output at frame {t}"
            norms.append(max([x.float().norm().item() for x in memory_tensors(state)], default=0.0))
    early, late = max(norms[50:150]), max(norms[150:300])
    assert all(math.isfinite(n) for n in norms)
    assert late <= 1.5 * early + 1e-6, f"state norm grows: {early:.3g} -> {late:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("memory_type", ["none", "gla", "elastic", "ttt"])
def test_tiny_model_2000_frames_finite_and_bounded(memory_type):
    torch.manual_seed(0)
    model = build_model(load_model_config("tiny", memory={"type": memory_type})).eval()
    video = moving_video(1, 64, 96, 128, seed=3)
    state = model.init_state(1)
    norms = []
    with torch.no_grad():
        for t in range(2000):
            out, state = model.step(video[:, t % 64], state)
            for key in KEYS:
                assert torch.isfinite(out[key]).all(), f"{key} non-finite at frame {t}"
            norms.append(max([x.float().norm().item() for x in memory_tensors(state)], default=0.0))
    early, late = max(norms[200:1000]), max(norms[1000:2000])
    assert late <= 1.5 * early + 1e-6, f"state norm grows: {early:.3g} -> {late:.3g}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("memory_type", ["gla", "elastic", "ttt", "causal_attention"])
def test_cuda_bf16_autocast_keeps_memory_states_fp32_and_step_matches_forward(memory_type):
    model = small_model(memory_type, {}, window=3).cuda()
    assert model.cfg.autocast == "bf16"
    video = moving_video(1, 6, 32, 48).cuda()
    with torch.no_grad():
        full = model(video)
        state = model.init_state(1, device="cuda")
        steps = []
        for t in range(6):
            out, state = model.step(video[:, t], state)
            steps.append(out)
    assert all(x.dtype == torch.float32 for x in memory_tensors(state) if x.is_floating_point())
    for key in KEYS:  # bf16 activations: the two paths agree to bf16 round-off
        assert_rel_close(full[key], torch.stack([o[key] for o in steps], 1), 2e-2, key)
