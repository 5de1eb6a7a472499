"""GLAMemory: an independent token-by-token reference, streaming = whole clip, splits, autocast, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layers.gla import GLACache, GLAMemory
from layers.memory import MemoryLayer
from layers.ops.gated_delta import naive_recurrent_gated_delta
from layers.ops.gla import naive_recurrent_gla
from layers.registry import build_memory, memory_options
from tests.numerics import assert_rel_close


def reference_forward(layer: GLAMemory, x: torch.Tensor) -> torch.Tensor:
    """The layer's function written out token by token: explicit causal conv taps, the naive GLA loop."""
    B, T, P, C = x.shape
    H, K, V = layer.num_heads, layer.key_dim, layer.value_dim
    tokens = x.reshape(B, T * P, C).double()
    L = T * P
    pre = tokens @ layer.qkv.weight.double().T  # [B, L, D]
    w = layer.conv.weight.double()[:, 0]  # [D, conv_size]; tap j reads the input conv_size - 1 - j back
    conv = torch.zeros_like(pre)
    for t in range(L):
        for j in range(layer.conv_size):
            src = t - (layer.conv_size - 1) + j
            if src >= 0:
                conv[:, t] += w[:, j] * pre[:, src]
    qkv = F.silu(conv)
    q, k, v = qkv.split([H * K, H * K, H * V], dim=-1)
    q = F.normalize(q.reshape(B, L, H, K), dim=-1)
    k = F.normalize(k.reshape(B, L, H, K), dim=-1)
    gate = tokens @ layer.gate_down.weight.double().T @ layer.gate_up.weight.double().T
    gate = gate + layer.gate_up.bias.double()
    g = (F.logsigmoid(gate) / layer.gate_normalizer).clamp(min=layer.gate_min).reshape(B, L, H, K)
    if layer.delta_rule:
        beta = torch.sigmoid(tokens @ layer.beta_proj.weight.double().T + layer.beta_proj.bias.double())
        o, _ = naive_recurrent_gated_delta(q, k, v.reshape(B, L, H, V), g, beta)
    else:
        o, _ = naive_recurrent_gla(q, k, v.reshape(B, L, H, V), g)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.out_norm.eps) * layer.out_norm.weight.double()
    z = torch.sigmoid(tokens @ layer.out_gate.weight.double().T + layer.out_gate.bias.double())
    y = (o.reshape(B, L, H * V) * z) @ layer.out_proj.weight.double().T
    return y.reshape(B, T, P, C)


def make_layer(**options) -> GLAMemory:
    layer = GLAMemory(48, 2, **options)
    with torch.no_grad():  # non-trivial norm weights so the reference checks them too
        layer.out_norm.weight.uniform_(0.5, 1.5)
    return layer


@pytest.mark.parametrize("options,T,P", [
    pytest.param({}, 3, 11, id="conv4-T3-P11"),
    pytest.param({"conv_size": 1, "chunk_size": 16}, 4, 9, id="conv1-T4-P9-C16"),
    pytest.param({"head_dim": 20, "expand_v": 1.5}, 2, 17, id="K20-V30-T2-P17"),
    pytest.param({"delta_rule": True, "chunk_size": 16}, 3, 11, id="delta-rule-T3-P11-C16"),
])
def test_matches_token_by_token_reference(options, T, P):
    layer = make_layer(**options)
    x = torch.randn(2, T, P, 48)
    y, _ = layer(x)
    assert_rel_close(reference_forward(layer, x), y, 1e-5, "y")


@pytest.mark.parametrize("P,delta_rule", [pytest.param(2, False, id="P2-shorter-than-conv"),
                                          pytest.param(13, False, id="P13"),
                                          pytest.param(7, True, id="P7-delta-rule")])
def test_frame_by_frame_equals_whole_clip(P, delta_rule):
    layer = make_layer(delta_rule=delta_rule)
    x = torch.randn(2, 6, P, 48)
    y_full, cache_full = layer(x)
    cache = layer.init_cache(2)
    outs = []
    for t in range(6):
        y_t, cache = layer(x[:, t:t + 1], cache)
        outs.append(y_t)
    assert_rel_close(y_full, torch.cat(outs, dim=1), 1e-5, "y")
    assert_rel_close(cache_full.state, cache.state, 1e-5, "state")
    assert_rel_close(cache_full.conv_state, cache.conv_state, 1e-6, "conv_state")


def test_split_clip_carries_gradients_through_the_cache():
    layer = make_layer()
    x = torch.randn(1, 5, 6, 48, requires_grad=True)
    y_full, _ = layer(x)
    (grad_full,) = torch.autograd.grad(y_full.pow(2).sum(), x)
    y_a, cache = layer(x[:, :2])
    y_b, _ = layer(x[:, 2:], cache)
    (grad_split,) = torch.autograd.grad(torch.cat([y_a, y_b], 1).pow(2).sum(), x)
    assert_rel_close(y_full, torch.cat([y_a, y_b], 1), 1e-5, "y")
    assert_rel_close(grad_full, grad_split, 1e-5, "dx")


def test_parameters_get_finite_gradients():
    layer = make_layer()
    y, cache = layer(torch.randn(2, 3, 8, 48))
    (y.pow(2).mean() + cache.state.pow(2).mean()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_state_stays_float32_under_bf16_autocast():
    layer = make_layer()
    x = torch.randn(1, 2, 8, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, cache = layer(x)
        y2, cache2 = layer(x, cache)
    assert cache.state.dtype == torch.float32 and cache2.conv_state.dtype == torch.float32
    assert torch.isfinite(y).all() and torch.isfinite(y2).all()
    y_fp32, _ = layer(x)
    assert_rel_close(y_fp32, y.float(), 5e-2, "y (bf16 autocast vs fp32)")


def test_protocol_registry_and_cache_type():
    layer = build_memory("gla", 48, 2, {"conv_size": 2, "gate_normalizer": 8.0})
    assert isinstance(layer, GLAMemory) and isinstance(layer, MemoryLayer)
    assert {"head_dim", "conv_size", "gate_normalizer", "chunk_size"} <= set(memory_options("gla"))
    cache = layer.init_cache(3)
    assert isinstance(cache, GLACache)
    assert cache.state.shape == (3, 2, 24, 24) and cache.conv_state.shape == (3, layer.qkv_dim, 1)


@pytest.mark.parametrize("bad,message", [
    pytest.param(lambda layer: layer(torch.randn(2, 8, 48)), r"\[B, T, P, C=48\]", id="x-3d"),
    pytest.param(lambda layer: layer(torch.randn(2, 1, 8, 32)), r"\[B, T, P, C=48\]", id="x-width"),
    pytest.param(lambda layer: layer(torch.randn(2, 1, 8, 48), layer.init_cache(3)), "cache.state must be",
                 id="cache-batch"),
    pytest.param(lambda layer: GLAMemory(48, 5), "not divisible", id="heads"),
    pytest.param(lambda layer: GLAMemory(48, 2, chunk_size=48), "power of two", id="chunk-size"),
    pytest.param(lambda layer: GLAMemory(48, 2, gate_min=0.5), "gate_min <= 0", id="gate-min"),
])
def test_bad_input_raises_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        bad(make_layer())
