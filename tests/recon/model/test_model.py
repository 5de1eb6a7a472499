"""The model: configs, output contract, coordinate frames, known intrinsics, errors, RoPE, baseline."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from layers.causal_attention import CausalAttentionMemory
from layers.rope import SpatioTemporalRoPE
from recon.cli import main as cli_main
from recon.errors import ConfigError, ShapeError
from recon.model import build_model, load_model_config
from recon.model.pose_enc import fov_to_intrinsics, intrinsics_to_fov
from tests.numerics import assert_rel_close

# A model small enough for fast tests (10 tokens per frame) with the full architecture.
SMALL = dict(name="test", image_size=(32, 48), patch_size=16, dim=48, depth=2, num_heads=2, window=2,
             num_register_tokens=2, memory=dict(type="causal_attention", depths=[0, 1]),
             head=dict(features=16, levels=[0, 1], camera_hidden=32))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(dict(SMALL)).eval()


def _video(B: int, T: int, H: int = 32, W: int = 48) -> torch.Tensor:
    return torch.rand(B, T, 3, H, W, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("preset", ["tiny", "small", "base", "large"])
def test_presets_load_and_build_on_meta(preset):
    cfg = load_model_config(preset)
    assert cfg.name == preset
    with torch.device("meta"):
        m = build_model(cfg)
    n = sum(p.numel() for p in m.parameters())
    expected_range = {"tiny": (2e6, 8e6), "small": (20e6, 60e6), "base": (100e6, 260e6),
                      "large": (450e6, 800e6)}
    lo, hi = expected_range[preset]
    assert lo < n < hi, f"{preset}: {n} parameters"


def test_large_preset_has_vit_l_widths():
    cfg = load_model_config("large")
    assert (cfg.dim, cfg.depth, cfg.num_heads) == (1024, 24, 16)


def test_unknown_top_level_key_names_key_and_valid_ones(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"dim": 64, "num_hedas": 2}))
    with pytest.raises(ConfigError, match=r"unknown key 'num_hedas'.*valid keys:.*num_heads"):
        load_model_config(path)


def test_unknown_nested_key_and_memory_option():
    with pytest.raises(ConfigError, match=r"model\.memory: unknown key 'dephts'.*depths"):
        load_model_config("tiny", memory={"dephts": [1]})
    with pytest.raises(ConfigError, match=r"model\.memory\.options\.bogus: unknown option of memory type "
                                          r"'causal_attention'; valid options: qk_norm$"):
        load_model_config("tiny", memory={"type": "causal_attention", "options": {"bogus": 1}})


def test_memory_options_from_yaml_are_typed_and_written_back_as_set(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("memory:\n  type: ttt\n  options: {form: parallel, update_hidden: false,"
                    " weight_norm: false, muon_steps: 0, retention_frames: [4, 64]}\n")
    cfg = load_model_config(path)
    assert cfg.memory.options.form == "parallel" and cfg.memory.options.retention_frames == (4.0, 64.0)
    written = cfg.to_dict()["memory"]["options"]
    assert written == {"form": "parallel", "update_hidden": False, "weight_norm": False, "muon_steps": 0,
                       "retention_frames": [4.0, 64.0]}
    again = load_model_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg and again.signature() == cfg.signature()
    assert load_model_config("tiny").to_dict()["memory"]["options"] == {}
    with pytest.raises(ConfigError, match=r"model\.memory\.options\.muon_steps: expected int, got 0\.5$"):
        load_model_config("tiny", memory={"type": "ttt", "options": {"muon_steps": 0.5}})


@pytest.mark.parametrize(
    "override, pattern",
    [
        pytest.param({"memory": {"type": "lstm"}}, r"memory\.type: unknown 'lstm'", id="memory-type"),
        pytest.param({"patch_size": 10}, r"multiples of patch_size 10", id="patch-size"),
        pytest.param({"dim": 50}, r"even head width", id="head-width"),
        pytest.param({"memory": {"depths": [9]}}, r"depths \[9\]", id="memory-depth"),
        pytest.param({"dim": "wide"}, r"model\.dim: expected int", id="type"),
        pytest.param({"autocast": "fp32"}, r"model\.autocast: unknown 'fp32'; valid: bf16, fp16, none$",
                     id="autocast-choice"),
        pytest.param({"head": {"depth_activation": "relu"}},
                     r"model\.head\.depth_activation: unknown 'relu'; valid: exp, softplus$",
                     id="head-choice"),
        pytest.param({"autocast": True}, r"model\.autocast: unknown True", id="choice-not-bool"),
        pytest.param({"mlp_ratio": 0.0}, r"model\.mlp_ratio 0\.0: expected a finite ratio > 0",
                     id="mlp-zero"),
        pytest.param({"mlp_ratio": float("nan")}, r"model\.mlp_ratio nan", id="mlp-nan"),
        pytest.param({"mlp_ratio": 1e-4}, r"at least 1 channel at dim 192", id="mlp-empty"),
    ],
)
def test_invalid_values_raise_config_error(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_model_config("tiny", **override)


def test_missing_config_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file or preset"):
        load_model_config("no_such_preset")
    with pytest.raises(ConfigError, match="file not found"):
        load_model_config(tmp_path / "missing.yaml")


def test_cli_model_info_prints_components(capsys):
    assert cli_main(["model", "info", "tiny", "--memory", "causal_attention"]) == 0
    out = capsys.readouterr().out
    for word in ("frame_blocks", "local_blocks", "memory_blocks", "dense_head", "camera_trunk",
                 "metric_readout",
                 "total",
                 "causal_attention after blocks [1, 3]"):
        assert word in out
    assert cli_main(["model", "info", "nope"]) == 2


# ---------------------------------------------------------------- outputs and frames


def test_output_shapes_ranges_and_first_frame_identity(model):
    B, T = 2, 3
    with torch.no_grad():
        out = model(_video(B, T))
    shapes = {"depth": (B, T, 32, 48), "depth_conf": (B, T, 32, 48), "K": (B, T, 3, 3),
              "cam2world": (B, T, 4, 4), "world_points": (B, T, 32, 48, 3), "pose_enc": (B, T, 9),
              "window_cam2world": (B, T, 1, 4, 4), "metric_scale": (B, T)}
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
        assert out[key].dtype == torch.float32 and torch.isfinite(out[key]).all(), key
    assert (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all() and (out["metric_scale"] > 0).all()
    torch.testing.assert_close(out["cam2world"][:, 0], torch.eye(4).expand(B, 4, 4), atol=0, rtol=0)
    assert not torch.allclose(out["cam2world"][:, 1], torch.eye(4).expand(B, 4, 4))
    R = out["cam2world"][..., :3, :3]
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5, rtol=0)


def test_motion_averaged_pose_composes_the_window_pose_and_scale_multiplies_depth(model):
    """Window 2 = one slot: cam2world[t] = cam2world[t-1] @ window[t, 0] exactly, and the pose_enc
    translation / quaternion encode cam2world."""
    with torch.no_grad():
        out = model(_video(1, 4))
    for t in range(1, 4):
        composed = out["cam2world"][0, t - 1] @ out["window_cam2world"][0, t, 0]
        torch.testing.assert_close(out["cam2world"][0, t], composed, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["pose_enc"][..., :3], out["cam2world"][..., :3, 3])


def test_non_finite_window_poses_fall_back_to_the_previous_pose_and_are_counted():
    torch.manual_seed(0)
    broken = build_model(dict(SMALL)).eval()
    with torch.no_grad():
        broken.camera_trunk.pose[-1].bias[:3] = float("nan")
        state = broken.init_state(1)
        poses = []
        for t in range(4):
            out, state = broken.step(_video(1, 4)[:, t], state)
            poses.append(out["cam2world"])
    assert all(torch.isfinite(p).all() for p in poses)
    assert int(state.poses.fallbacks.sum()) == 3           # frames 1..3; frame 0 is the identity
    torch.testing.assert_close(poses[3], torch.eye(4)[None])


def test_world_points_match_a_per_pixel_loop(model):
    with torch.no_grad():
        out = model(_video(1, 2))
    depth, K, T = out["depth"][0, 1].double(), out["K"][0, 1].double(), out["cam2world"][0, 1].double()
    for v, u in [(0, 0), (5, 17), (31, 47), (16, 24)]:
        z = depth[v, u]
        cam = torch.stack(((u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z))
        world = T[:3, :3] @ cam + T[:3, 3]
        torch.testing.assert_close(out["world_points"][0, 1, v, u].double(), world, atol=1e-5, rtol=1e-5)


def test_predicted_intrinsics_follow_the_predicted_fov(model):
    with torch.no_grad():
        out = model(_video(1, 2))
    fov_h, fov_w = out["pose_enc"][..., 7], out["pose_enc"][..., 8]
    torch.testing.assert_close(out["K"][..., 0, 0], 24.0 / torch.tan(fov_w / 2))
    torch.testing.assert_close(out["K"][..., 1, 1], 16.0 / torch.tan(fov_h / 2))
    torch.testing.assert_close(out["K"][..., 0, 2], torch.full_like(fov_w, 23.5))
    torch.testing.assert_close(out["K"][..., 1, 2], torch.full_like(fov_h, 15.5))


def test_fov_intrinsics_round_trip_hand_case():
    K = fov_to_intrinsics(torch.tensor(math.pi / 2), torch.tensor(math.pi / 2), 32, 48)
    torch.testing.assert_close(K, torch.tensor([[24.0, 0, 23.5], [0, 16.0, 15.5], [0, 0, 1]]))
    fov_h, fov_w = intrinsics_to_fov(K, 32, 48)
    torch.testing.assert_close(torch.stack((fov_h, fov_w)), torch.full((2,), math.pi / 2))


@pytest.mark.parametrize("per_frame", [False, True], ids=["K-per-sequence", "K-per-frame"])
def test_known_intrinsics_are_used(model, per_frame):
    B, T = 2, 3
    K = torch.tensor([[40.0, 0, 20.0], [0, 42.0, 14.0], [0, 0, 1]]).repeat(B, 1, 1)
    K[1, 0, 0] = 60.0
    K_in = K.unsqueeze(1).repeat(1, T, 1, 1) if per_frame else K
    with torch.no_grad():
        out = model(_video(B, T), K=K_in)
    torch.testing.assert_close(out["K"], K.unsqueeze(1).expand(B, T, 3, 3))
    z = out["depth"][1, 2, 7, 30]
    cam = torch.stack(((30 - 20.0) / 60.0 * z, (7 - 14.0) / 42.0 * z, z))
    T12 = out["cam2world"][1, 2]
    torch.testing.assert_close(out["world_points"][1, 2, 7, 30], T12[:3, :3] @ cam + T12[:3, 3])
    state = model.init_state(B)
    with torch.no_grad():
        o0, state = model.step(_video(B, 1)[:, 0], state, K=K)
    torch.testing.assert_close(o0["K"], K)


def test_outputs_are_causal_in_time(model):
    video = _video(1, 5)
    changed = video.clone()
    changed[:, 3:] = torch.rand_like(changed[:, 3:])
    with torch.no_grad():
        a, b = model(video), model(changed)
    for key in ("depth", "cam2world", "world_points"):
        torch.testing.assert_close(a[key][:, :3], b[key][:, :3], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(a[key][:, 3:], b[key][:, 3:]), key


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "shape, pattern",
    [
        pytest.param((1, 2, 3, 32, 40), r"expected frames of H x W = 32 x 48.*got 32 x 40", id="width"),
        pytest.param((1, 2, 4, 32, 48), r"expected 3 colour channels.*got 4", id="channels"),
        pytest.param((2, 3, 32, 48), r"expected shape \[B, T, 3, H, W\], got \[2, 3, 32, 48\]", id="rank"),
    ],
)
def test_wrong_video_shape_raises_shape_error(model, shape, pattern):
    with pytest.raises(ShapeError, match=pattern):
        model(torch.rand(shape))


def test_wrong_frame_and_state_errors(model):
    state = model.init_state(1)
    with pytest.raises(ShapeError, match=r"frames: expected frames of H x W = 32 x 48 .*got 64 x 48"):
        model.step(torch.rand(1, 3, 64, 48), state)
    with pytest.raises(ShapeError, match=r"expected 3 colour channels"):
        model.step(torch.rand(1, 1, 32, 48), state)
    with pytest.raises(ShapeError, match=r"dtype torch.uint8"):
        model(torch.zeros(1, 1, 3, 32, 48, dtype=torch.uint8))
    with pytest.raises(ShapeError, match=r"state holds 1 sequence\(s\) but the frames have batch size 2"):
        model.step(torch.rand(2, 3, 32, 48), state)
    with pytest.raises(ShapeError, match=r"expected intrinsics of shape \[1, 3, 3\]"):
        model(torch.rand(1, 2, 3, 32, 48), K=torch.eye(4)[None])
    with pytest.raises(ShapeError, match=r"expected a StreamState"):
        model.step(torch.rand(1, 3, 32, 48), {"frame_index": 0})


def test_state_of_another_model_is_rejected(model):
    other = build_model({**SMALL, "window": 3}).eval()
    with pytest.raises(ShapeError, match=r"created by a model with architecture .* but this model is"):
        model.step(torch.rand(1, 3, 32, 48), other.init_state(1))


# ---------------------------------------------------------------- RoPE and the baseline layer


def test_rope_time_rotation_by_relative_offset_matches_absolute_positions_in_float64():
    rope = SpatioTemporalRoPE(32, theta_time=100.0).double()
    q, k = torch.randn(5, 32, dtype=torch.float64), torch.randn(5, 32, dtype=torch.float64)
    t_q, t_k = 10_000.0, 9_997.0

    def absolute(x, t):  # plain per-pair rotation by angle t * inv_freq, float64
        x = x.clone()
        for i, f in enumerate(rope.inv_freq_t.double()):
            a, b = x[..., 2 * i].clone(), x[..., 2 * i + 1].clone()
            c, s = math.cos(t * f.item()), math.sin(t * f.item())
            x[..., 2 * i], x[..., 2 * i + 1] = a * c - b * s, a * s + b * c
        return x

    ref = (absolute(q, t_q) * absolute(k, t_k)).sum(-1)
    rel = (q * rope.rotate_time(k, torch.tensor(t_k - t_q))).sum(-1)
    torch.testing.assert_close(rel.double(), ref, atol=1e-9, rtol=1e-9)


def test_rope_space_scores_depend_only_on_position_difference():
    rope = SpatioTemporalRoPE(24, time_fraction=0.0)
    q, k = torch.randn(1, 24), torch.randn(1, 24)

    def score(pos_q, pos_k):
        rq, rk = rope.rotate_space(q, torch.tensor([pos_q])), rope.rotate_space(k, torch.tensor([pos_k]))
        return (rq * rk).sum()

    a, b = score([2.0, 3.0], [5.0, 1.0]), score([0.0, 0.0], [3.0, -2.0])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_causal_attention_memory_matches_a_per_token_softmax_loop():
    layer = CausalAttentionMemory(16, 2).double()
    B, T, P = 2, 4, 3
    x = torch.randn(B, T, P, 16, dtype=torch.float64)
    y, cache = layer(x)
    h, d = 2, 8
    q, k, v = layer.qkv(x).view(B, T * P, 3, h, d).unbind(2)
    q, k = layer.q_norm(q), layer.k_norm(k)
    ref = torch.zeros(B, T * P, h, d, dtype=torch.float64)
    for i in range(T * P):
        visible = (i // P + 1) * P                       # all tokens of frames <= frame(i)
        for b in range(B):
            for hh in range(h):
                w = torch.softmax(k[b, :visible, hh] @ q[b, i, hh] / math.sqrt(d), dim=0)
                ref[b, i, hh] = w @ v[b, :visible, hh]
    ref = layer.proj(ref.reshape(B, T, P, 16))
    assert_rel_close(ref, y, 1e-12, "y")
    assert cache.k.shape == (B, h, T * P, d)


def test_every_parameter_gets_a_gradient_from_the_outputs():
    torch.manual_seed(0)
    net = build_model(dict(SMALL)).train()
    out = net(_video(1, 3))
    loss = (out["depth"].log().mean() + out["depth_conf"].mean() + out["pose_enc"].square().mean()
            + out["world_points"].abs().mean())
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


def test_sincos_position_code_matches_a_loop_and_separates_patches():
    from recon.model.embed import FrameEmbedding, sincos_2d

    code = sincos_2d(2, 3, 8)
    for i in range(2):
        for j in range(3):
            expected = []
            for coord in (i, j):
                freq = [math.exp(-math.log(100.0) * k / 2) for k in range(2)]
                expected += [math.sin(coord * f) for f in freq] + [math.cos(coord * f) for f in freq]
            torch.testing.assert_close(code[i * 3 + j], torch.tensor(expected))
    embed = FrameEmbedding(16, 16, (32, 48), 1, 2)
    tokens = embed(torch.full((1, 3, 32, 48), 0.5))[0, embed.num_special:]     # a uniform image
    assert torch.cdist(tokens, tokens).fill_diagonal_(1.0).min() > 1e-3      # every patch distinct
    plain = FrameEmbedding(16, 16, (32, 48), 1, 2, absolute_position=False)
    flat = plain(torch.full((1, 3, 32, 48), 0.5))[0, plain.num_special:]
    torch.testing.assert_close(flat, flat[:1].expand_as(flat))


def test_pair_motion_pairs_each_frame_with_the_slot_frames_across_calls():
    """Slot j of frame t gets (motion frame t, motion frame t - j), zeros before frame 0, whether the
    frames come in one call or two (the motion frames carried in the state)."""
    from recon.model.motion_encoder import motion_frames, motion_pool

    torch.manual_seed(0)
    net = build_model({**SMALL, "window": 4}).eval()

    class Spy(torch.nn.Module):  # a "flow" and feature that name the pair: mean of current, of earlier
        def flow(self, current, earlier):
            return torch.stack((current.mean((1, 2, 3)), earlier.mean((1, 2, 3))), -1)[..., None, None]

        def features(self, flow):
            return flow.flatten(1)

    net.motion_encoder = Spy()
    video = _video(1, 5)
    embed = net.aggregator.embed
    pool = motion_pool(net.cfg.image_size)
    pooled = motion_frames((video[0] - embed.mean) / embed.std, pool).mean((1, 2, 3))  # [T]
    state = net.init_state(1)
    images = (video - embed.mean) / embed.std
    m1, _, hist, current = net._pair_motion(images[:, :2], state.poses.frames)
    m2, _, _, _ = net._pair_motion(images[:, 2:], hist)
    torch.testing.assert_close(current[0].mean((1, 2, 3)), pooled[:2])
    motion = torch.cat((m1, m2)).view(5, 3, 2)
    for t in range(5):
        for j in range(1, 4):
            torch.testing.assert_close(motion[t, j - 1, 0], pooled[t])
            earlier = pooled[t - j] if t - j >= 0 else torch.tensor(0.0)
            torch.testing.assert_close(motion[t, j - 1, 1], earlier)
