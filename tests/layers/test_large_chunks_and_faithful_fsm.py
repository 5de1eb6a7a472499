"""Large fast-weight chunks (``chunk_frames``), elastic ``mode="faithful"`` (Fast Spatial Memory as
its public code runs it) and GLA's per-head decay, each against an independent reference:

- the faithful elastic layer against a float64 loop written here from the published recurrence
  (autograd for the inner-loss gradient, a Newton-Schulz iteration of its own, plain tensor ops for
  importance, consolidation, weight norm and anchor), one (sequence, head) at a time;
- TTT with ``chunk_frames = n`` against the token-chunked reference op ``ttt_sequential`` with
  ``chunk_size = n * P``;
- GLA with ``decay="head"`` against the token loop of ``naive_recurrent_gated_delta`` / ``gla``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layers.elastic import ElasticMemory
from layers.gla import GLAMemory
from layers.ops.gated_delta import naive_recurrent_gated_delta
from layers.ops.gla import naive_recurrent_gla
from layers.ops.ttt import ttt_sequential
from layers.registry import build_memory, parse_memory_options
from recon.errors import ConfigError
from tests.numerics import assert_rel_close

B, T, P, C, H = 2, 7, 5, 32, 2
FSM = dict(mode="faithful", estimator="si", lam=0.5, beta=0.5, importance_decay=0.5)


def run_stream(layer, x, split):
    """Frame by frame through the cache, then the clip in two parts split at ``split``."""
    cache, ys = layer.init_cache(x.shape[0]), []
    for t in range(x.shape[1]):
        y, cache = layer(x[:, t : t + 1], cache)
        ys.append(y)
    y_a, c = layer(x[:, :split])
    y_b, _ = layer(x[:, split:], c)
    return torch.cat(ys, dim=1), torch.cat([y_a, y_b], dim=1)


# -- an independent reference of the published FSM recurrence (float64, one head at a time) --------
def ns5(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Quintic Newton-Schulz as in Muon: transpose tall matrices, unit Frobenius norm, iterate."""
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (torch.linalg.matrix_norm(x) + 1e-7)
    for _ in range(steps):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def naive_fsm_head(q, k, v, eta, w0, w1, w2, chunk, lam, beta, alpha):
    """q, k [T, K], v [T, V], eta [T]; w0, w2 [K, Dh], w1 [Dh, V] -> o [T, V] (strict read-out)."""
    ws = [w0.clone(), w1.clone(), w2.clone()]
    anchors = [w.clone() for w in ws]
    imp = [torch.full_like(w, 1e-6) for w in ws]
    norms = [w.norm(dim=0) for w in ws]  # column norms of the slow weights
    out = []
    for s in range(0, q.shape[0], chunk):
        e = min(s + chunk, q.shape[0])
        a0, a1, a2 = ws
        out.append((F.silu(q[s:e] @ a0) * (q[s:e] @ a2)) @ a1)
        with torch.enable_grad():
            leaves = [w.clone().requires_grad_(True) for w in ws]
            f = (F.silu(k[s:e] @ leaves[0]) * (k[s:e] @ leaves[2])) @ leaves[1]
            loss = -(eta[s:e, None] * f * v[s:e]).sum()
            grads = torch.autograd.grad(loss, leaves)
        for i in range(3):
            step = ns5(-grads[i])
            w_new = ws[i] + step
            imp[i] = alpha * imp[i] + (1 - alpha) * (step * (w_new - anchors[i])).abs()
            w_c = w_new - lam * imp[i] * (w_new - anchors[i])
            w_c = w_c / w_c.norm(dim=0) * norms[i]
            anchors[i] = beta * anchors[i] + (1 - beta) * w_c
            ws[i] = w_c
    return torch.cat(out)


def faithful_reference(layer: ElasticMemory, x: torch.Tensor) -> torch.Tensor:
    """The layer's own projections and read-out around :func:`naive_fsm_head` in float64."""
    with torch.no_grad():
        q, k, v, eta = (t.double() for t in layer.io.project(x))
        io, n = layer.io, layer.chunk_frames * x.shape[2]
        o = torch.zeros_like(v)
        for b in range(x.shape[0]):
            for h in range(io.num_heads):
                o[b, :, h] = naive_fsm_head(
                    q[b, :, h], k[b, :, h], v[b, :, h], eta[b, :, h], io.w0[h].double(), io.w1[h].double(),
                    io.w2[h].double(), n, layer.lam_value, layer.beta_value, layer.importance_decay,
                )
        return io.output(o.float(), x.shape)


@pytest.mark.parametrize("chunk_frames", [1, 3], ids=["chunk1", "chunk3"])
def test_faithful_elastic_equals_the_published_recurrence(chunk_frames):
    torch.manual_seed(0)
    layer = ElasticMemory(C, H, base_lr=0.3, chunk_frames=chunk_frames, **FSM)
    x = torch.randn(B, T, P, C)
    y, _ = layer(x)
    assert torch.isfinite(y).all()
    # float32 layer vs float64 loop through 5 Newton-Schulz steps per update
    assert_rel_close(faithful_reference(layer, x), y, 1e-4, "faithful FSM vs float64 reference")


def test_faithful_importance_is_the_unnormalised_si_ema_hand_computed():
    """Two chunks on one (sequence, head): F after each is (1 - a) * |step * (W' - A)| + a * F,
    computed here by hand from the weights the layer's state reports (no per-head max normalisation)."""
    torch.manual_seed(1)
    layer = ElasticMemory(8, 1, hidden_ratio=1.0, base_lr=0.5, **FSM)
    x = torch.randn(1, 2, 3, 8)
    with torch.no_grad():
        _, c1 = layer(x[:, :1])
        _, c2 = layer(x[:, 1:], c1)
        q, k, v, eta = layer.io.project(x[:, 1:])
        w1, a1 = c1.recurrent.weights.w1[0, 0], c1.recurrent.anchors[1][0, 0]
        w0, w2 = c1.recurrent.weights.w0[0, 0], c1.recurrent.weights.w2[0, 0]
        kk, vv, ee = k[0, :, 0], v[0, :, 0], eta[0, :, 0]
        grad_step = ((F.silu(kk @ w0) * (kk @ w2)).T @ (ee[:, None] * vv))  # -dL/dw1 = phi(K)^T (eta V)
        step = ns5(grad_step)
        expected = 0.5 * c1.recurrent.importance[1][0, 0] + 0.5 * (step * (w1 + step - a1)).abs()
    got = c2.recurrent.importance[1][0, 0]
    assert_rel_close(expected, got, 1e-5, "importance EMA of w1")
    assert got.max() < 0.5  # raw SI magnitudes, not scaled so that the maximum is 1


@pytest.mark.parametrize(
    "cls, options",
    [
        (ElasticMemory, dict(FSM, chunk_frames=3)),
        (ElasticMemory, dict(FSM)),
        (ElasticMemory, dict(FSM, inclusive=True, anchor="streaming")),
        (ElasticMemory, dict(form="sequential", estimator="sq", chunk_frames=2)),
        (ElasticMemory, dict(form="sequential", estimator="static", chunk_frames=4)),
        ("ttt", dict(chunk_frames=3)),
        ("ttt", dict(chunk_frames=4, momentum=0.5, retention_frames=(4, 64))),
    ],
    ids=["fsm-chunk3", "fsm-chunk1", "fsm-inclusive-streaming", "reduced-seq-sq-chunk2",
         "reduced-seq-static-chunk4", "lact-chunk3", "lact-chunk4-mom-retention"],
)
def test_streaming_equals_whole_clip_with_large_chunks(cls, options):
    torch.manual_seed(2)
    layer = build_memory("ttt", C, H, options) if cls == "ttt" else cls(C, H, **options)
    x = torch.randn(B, T, P, C)
    y_full, _ = layer(x)
    y_frames, y_split = run_stream(layer, x, split=2)  # 2 + 5 frames: the split falls inside a chunk
    assert_rel_close(y_full, y_frames, 1e-5, "frame by frame")
    assert_rel_close(y_full, y_split, 1e-5, "split 2 + 5")


@pytest.mark.parametrize("n", [2, 3], ids=["chunk2", "chunk3"])
def test_ttt_chunk_frames_equals_the_token_chunked_reference(n):
    torch.manual_seed(3)
    layer = build_memory("ttt", C, H, {"chunk_frames": n})  # LaCT: hidden update, Muon 5, weight norm
    x = torch.randn(B, T, P, C)
    with torch.no_grad():
        y, _ = layer(x)
        q, k, v, eta = (t.double() for t in layer.io.project(x))
        slow = layer.io.slow_weights(B)
        o, _ = ttt_sequential(q, k, v, eta, slow.w0.double(), slow.w1.double(), slow.w2.double(),
                              chunk_size=n * P, update_hidden=True, weight_norm=True, muon_steps=5)
        ref = layer.io.output(o.float(), x.shape)
    assert_rel_close(ref, y, 1e-4, f"chunk_frames={n} vs ttt_sequential(chunk_size={n * P})")


def test_large_chunk_state_keeps_its_size_and_applies_on_the_nth_frame():
    torch.manual_seed(4)
    layer = ElasticMemory(C, H, chunk_frames=3, **FSM)
    cache = layer.init_cache(1)
    sizes, w1 = set(), cache.recurrent.weights.w1
    x = torch.randn(1, 7, P, C)
    with torch.no_grad():
        for t in range(7):
            _, cache = layer(x[:, t : t + 1], cache)
            sizes.add(sum(u.numel() for u in cache.pending if u is not None))
            assert cache.pending_frames == (t + 1) % 3
            changed = not torch.equal(w1, cache.recurrent.weights.w1)
            assert changed == ((t + 1) % 3 == 0), t  # the weights move on frames 3 and 6 only
            w1 = cache.recurrent.weights.w1
    assert len(sizes) == 1


@pytest.mark.parametrize("delta_rule", [True, False], ids=["delta", "plain"])
def test_gla_head_decay_equals_the_token_loop(delta_rule):
    torch.manual_seed(5)
    layer = GLAMemory(C, H, decay="head", delta_rule=delta_rule, conv_size=1, chunk_size=16)
    assert layer.gate_up.out_features == H
    x = torch.randn(B, 3, P, C)
    y, cache = layer(x)
    with torch.no_grad():  # the same projections by hand, then the reference loop over tokens
        tok = x.reshape(B, -1, C)
        L, K = tok.shape[1], layer.key_dim
        q, k, v = F.silu(layer.qkv(tok) @ torch.eye(layer.qkv_dim) * layer.conv.weight[:, 0, 0]).split(
            [H * K, H * K, H * layer.value_dim], dim=-1)
        q, k = F.normalize(q.reshape(B, L, H, K), dim=-1), F.normalize(k.reshape(B, L, H, K), dim=-1)
        v = v.reshape(B, L, H, -1)
        gate = layer.gate_up(layer.gate_down(tok))
        g = (F.logsigmoid(gate) / layer.gate_normalizer).clamp(min=layer.gate_min)
        g = g.unsqueeze(-1).expand(B, L, H, K)  # one decay per head, the same on every channel
        if delta_rule:
            beta = torch.sigmoid(layer.beta_proj(tok))
            o, state = naive_recurrent_gated_delta(q, k, v, g, beta, output_final_state=True)
        else:
            o, state = naive_recurrent_gla(q, k, v, g, output_final_state=True)
        o = layer.out_norm(o) * torch.sigmoid(layer.out_gate(tok)).reshape(B, L, H, -1)
        ref = layer.out_proj(o.reshape(B, L, -1)).reshape(x.shape)
    assert_rel_close(ref, y, 1e-5, "head decay vs token loop")
    assert_rel_close(state, cache.state, 1e-5, "final state")


def test_gla_head_decay_streams_like_the_clip():
    torch.manual_seed(6)
    layer = GLAMemory(C, H, decay="head")
    x = torch.randn(B, 5, P, C)
    y_full, _ = layer(x)
    y_frames, y_split = run_stream(layer, x, split=3)
    assert_rel_close(y_full, y_frames, 1e-5, "frame by frame")
    assert_rel_close(y_full, y_split, 1e-5, "split 3 + 2")


BAD = [
    pytest.param("elastic", {"mode": "faithful", "form": "sequential"}, r"options\.form: .*reduced.* only",
                 id="faithful-form"),
    pytest.param("elastic", {"mode": "faithful", "learn_lam": True}, r"options\.learn_lam: ",
                 id="faithful-learn"),
    pytest.param("elastic", {"mode": "faithful", "estimator": "static"}, "data-dependent estimator",
                 id="faithful-static"),
    pytest.param("elastic", {"chunk_frames": 4}, r"chunk_frames: 4 frames per update needs form='sequential'",
                 id="reduced-parallel-chunk"),
    pytest.param("elastic", {"mode": "faithful", "chunk_frames": 2, "inclusive": True},
                 r"options\.inclusive: inclusive=True needs chunk_frames=1", id="faithful-inclusive-chunk"),
    pytest.param("ttt", {"chunk_frames": 0}, r"chunk_frames: expected an int >= 1", id="ttt-chunk0"),
    pytest.param("ttt", {"form": "parallel", "chunk_frames": 2}, "needs form='sequential'",
                 id="ttt-parallel-chunk"),
    pytest.param("elastic", {"mode": "exact"}, r"options\.mode", id="elastic-mode"),
    pytest.param("gla", {"decay": "scalar"}, r"options\.decay", id="gla-decay"),
    pytest.param("elastic", {"delta_rule": False}, "valid options: .*mode, chunk_frames", id="not-elastic"),
]


@pytest.mark.parametrize("name, data, pattern", BAD)
def test_option_combinations_fail_when_parsed(name, data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_memory_options(name, data)


def test_faithful_mode_defaults_have_no_retention_and_update_every_weight():
    layer = ElasticMemory(C, H, mode="faithful")
    assert layer.retention is None and layer.update_hidden and layer.form == "sequential"
    assert layer.importance_logit is None
    assert ElasticMemory(C, H).retention is not None  # reduced keeps its retention by default
    with pytest.raises(ValueError, match="reduced' only"):
        ElasticMemory(C, H, mode="faithful", update_hidden=True)
