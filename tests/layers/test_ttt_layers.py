"""TTTMemory and ElasticMemory: streaming == whole clip for every form and option set, cross-checks,
caches, config."""

from __future__ import annotations

import math

import pytest
import torch

from layers.elastic import ElasticMemory
from layers.memory import MemoryLayer
from layers.ttt import TTTMemory
from tests.numerics import assert_rel_close

B, T, P, C, H = 2, 5, 6, 32, 2
PLAIN = dict(update_hidden=False, weight_norm=False, muon_steps=0)

TTT_MODES = [
    pytest.param({}, id="lact-hidden-wnorm-muon5"),
    pytest.param(dict(PLAIN), id="plain"),
    pytest.param(dict(weight_norm=False, muon_steps=0, momentum=0.6), id="hidden-mom0.6"),
    pytest.param(dict(muon_steps=3, inclusive=True), id="hidden-wnorm-muon3-inclusive"),
    pytest.param(dict(PLAIN, form="parallel"), id="parallel"),
    pytest.param(dict(PLAIN, form="parallel", momentum=0.8, inclusive=True), id="parallel-mom0.8-inclusive"),
    pytest.param(dict(PLAIN, form="parallel", retention_frames=None), id="parallel-no-retention"),
    pytest.param(dict(retention_frames=(2, 16), inclusive=True), id="lact-retention-inclusive"),
]

ELASTIC_MODES = (
    [
        pytest.param({}, id="reduced"),
        pytest.param(
            dict(inclusive=True, learn_lam=True, learn_beta=True, lam=0.7, beta=0.5), id="reduced-learned"
        ),
        pytest.param(dict(lam=1.0, beta=0.0), id="reduced-lam1-beta0"),
        pytest.param(dict(retention_frames=None), id="reduced-no-retention"),
        pytest.param(dict(form="sequential", retention_frames=None), id="fsm-no-retention"),
    ]
    + [
        pytest.param(dict(form="sequential", estimator=est, anchor=anchor), id=f"fsm-{est}-{anchor}")
        for est in ("abs", "sq", "si", "static")
        for anchor in ("global", "streaming", "streaming-ema")
    ]
    + [
        pytest.param(
            dict(form="sequential", estimator="si", update_hidden=True, inclusive=True),
            id="fsm-si-hidden-inclusive",
        ),
    ]
)


def frame_by_frame(layer, x):
    """Run a clip one frame at a time through the cache."""
    cache = layer.init_cache(x.shape[0], x.device)
    ys = []
    for t in range(x.shape[1]):
        y_t, cache = layer(x[:, t : t + 1], cache)
        ys.append(y_t)
    return torch.cat(ys, dim=1), cache


def check_streaming(layer):
    torch.manual_seed(1)
    x = torch.randn(B, T, P, C)
    y_full, _ = layer(x)
    y_stream, _ = frame_by_frame(layer, x)
    assert y_full.shape == x.shape
    assert_rel_close(y_full, y_stream, 1e-5, "frame-by-frame")
    y_a, cache = layer(x[:, :2])  # arbitrary split: 2 + 3 frames
    y_b, _ = layer(x[:, 2:], cache)
    assert_rel_close(y_full, torch.cat([y_a, y_b], dim=1), 1e-5, "split 2+3")


@pytest.mark.parametrize("options", TTT_MODES)
def test_ttt_streaming_equals_whole_clip(options):
    layer = TTTMemory(C, H, **options)
    assert isinstance(layer, MemoryLayer)
    check_streaming(layer)


@pytest.mark.parametrize("options", ELASTIC_MODES)
def test_elastic_streaming_equals_whole_clip(options):
    layer = ElasticMemory(C, H, **options)
    if layer.importance_logit is not None:
        torch.nn.init.normal_(layer.importance_logit)  # per-unit importance, not one constant
    assert isinstance(layer, MemoryLayer)
    check_streaming(layer)


@pytest.mark.parametrize(
    "options",
    [dict(retention_frames=None), dict(retention_frames=(4, 64)), dict(momentum=0.7, inclusive=True,
                                                                       retention_frames=(4, 64))],
    ids=["no-retention", "retention", "mom0.7-inclusive-retention"],
)
def test_ttt_parallel_form_equals_sequential_form(options):
    seq = TTTMemory(C, H, **PLAIN, **options)
    par = TTTMemory(C, H, form="parallel", **PLAIN, **options)
    par.load_state_dict(seq.state_dict())
    if seq.retention is not None:
        torch.nn.init.uniform_(seq.retention.logit, 0.0, 4.0)  # strong, per-unit retention
        par.load_state_dict(seq.state_dict())
    x = torch.randn(B, T, P, C)
    assert_rel_close(seq(x)[0], par(x)[0], 1e-5, "parallel vs sequential layer")


@pytest.mark.parametrize("inclusive", [False, True], ids=["strict", "inclusive"])
def test_elastic_reduced_equals_fsm_with_static_importance(inclusive):
    reduced = ElasticMemory(C, H, lam=0.8, beta=0.7, learn_beta=True, inclusive=inclusive)
    torch.nn.init.normal_(reduced.importance_logit)
    fsm = ElasticMemory(
        C, H, form="sequential", estimator="static", lam=0.8, beta=0.7, learn_beta=True, inclusive=inclusive
    )
    torch.nn.init.uniform_(reduced.retention.logit, 0.0, 4.0)
    fsm.load_state_dict(reduced.state_dict())
    x = torch.randn(B, T, P, C)
    assert_rel_close(fsm(x)[0], reduced(x)[0], 1e-5, "reduced vs fsm(static)")


def test_reduced_caches_are_fixed_size():
    x = torch.randn(1, 12, 4, C)
    for layer in (ElasticMemory(C, H), TTTMemory(C, H, form="parallel", **PLAIN, momentum=0.5)):
        cache = layer.init_cache(1)
        shape = cache.state.shape
        for t in range(12):
            _, cache = layer(x[:, t : t + 1], cache)
            assert cache.state.shape == shape and cache.state.dtype == torch.float32
    dh = ElasticMemory(C, H).io.hidden
    assert shape == (1, H, 2 * dh, C // H)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(form="sequential", estimator="sq", update_hidden=True),
     dict(form="sequential", estimator="static")],
    ids=["reduced", "fsm-sq-hidden", "fsm-static"],
)
def test_gradients_reach_every_parameter(options):
    """Every parameter is used (DDP-safe) and gets a finite, non-zero gradient."""
    layer = ElasticMemory(C, H, learn_lam=True, learn_beta=True, **options)
    y, _ = layer(torch.randn(B, T, P, C))
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient"


def test_autocast_bf16_keeps_states_float32():
    layer = ElasticMemory(C, H)
    x = torch.randn(B, T, P, C)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, cache = layer(x)
    assert cache.state.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert_rel_close(layer(x)[0], y.float(), 5e-2, "bf16 autocast vs fp32")


@pytest.mark.parametrize(
    "frames", [pytest.param(60, id="60-frames"), pytest.param(2000, id="2000-frames", marks=pytest.mark.slow)]
)
def test_long_stream_stays_finite_and_weight_norm_holds(frames):
    """Frames streamed: no NaN/Inf; LaCT weight norm keeps every w1 column at its slow-weight norm."""
    torch.manual_seed(2)
    elastic, ttt = ElasticMemory(16, 2, base_lr=0.05, lam=0.5, beta=0.8), TTTMemory(16, 2, base_lr=0.05)
    for layer in (elastic, ttt):
        cache = layer.init_cache(1)
        with torch.no_grad():
            for _ in range(frames):
                y, cache = layer(torch.randn(1, 1, 8, 16), cache)
                assert torch.isfinite(y).all()
        state = cache.state if layer is elastic else cache.recurrent.w1
        assert torch.isfinite(state).all()
    slow_norms = ttt.io.w1.detach().norm(dim=-2).unsqueeze(0)
    assert_rel_close(
        slow_norms, cache.recurrent.w1.norm(dim=-2), 1e-5, f"w1 column norms after {frames} frames"
    )


BAD = [
    pytest.param(ElasticMemory, dict(lam=0.0), "lam must be in", id="elastic-lam0"),
    pytest.param(ElasticMemory, dict(beta=1.0), "beta must be in", id="elastic-beta1"),
    pytest.param(ElasticMemory, dict(form="reduced"), "form must be", id="elastic-form"),
    pytest.param(
        ElasticMemory, dict(form="sequential", estimator="fisher"), "estimator must be",
        id="elastic-estimator",
    ),
    pytest.param(ElasticMemory, dict(form="sequential", anchor="ema"), "anchor must be", id="elastic-anchor"),
    pytest.param(ElasticMemory, dict(update_hidden=True), "frozen kernel", id="elastic-reduced-hidden"),
    pytest.param(
        ElasticMemory,
        dict(form="sequential", anchor="global", learn_beta=True),
        "learn_beta needs",
        id="elastic-fsm-global-learn-beta",
    ),
    pytest.param(TTTMemory, dict(form="parallel"), "form='parallel' needs", id="ttt-parallel-lact"),
    pytest.param(TTTMemory, dict(momentum=1.0), "momentum must be", id="ttt-momentum1"),
    pytest.param(TTTMemory, dict(form="chunked"), "form must be", id="ttt-form"),
    pytest.param(ElasticMemory, dict(retention_frames=(1, 10)), "1 < shortest <= longest", id="retention-1"),
    pytest.param(TTTMemory, dict(retention_frames=(20, 10)), "1 < shortest <= longest", id="retention-order"),
    pytest.param(ElasticMemory, dict(retention_frames="long"), r"\[shortest, longest\] or null",
                 id="retention-string"),
    pytest.param(TTTMemory, dict(PLAIN, form="parallel", momentum=0.9, retention_frames=(4, 64)),
                 "must be below the shortest retention", id="ttt-momentum-above-retention"),
]


def test_learned_retention_starts_at_log_spaced_horizons():
    layer = ElasticMemory(C, H, retention_frames=(8, 512))
    horizons = 1.0 / (1.0 - layer.gamma().double())
    expected = torch.logspace(math.log10(8), math.log10(512), layer.io.hidden, dtype=torch.float64)
    assert horizons.shape == (H, layer.io.hidden)
    assert_rel_close(expected.expand(H, -1), horizons, 1e-4, "initial horizons")
    assert TTTMemory(C, H).retention is None  # faithful LaCT: weight norm bounds it
    assert TTTMemory(C, H, form="parallel", **PLAIN).retention is not None


@pytest.mark.parametrize(
    "cls, options",
    [(ElasticMemory, {}), (ElasticMemory, dict(form="sequential")),
     (TTTMemory, dict(PLAIN, form="parallel"))],
    ids=["elastic-reduced", "elastic-fsm", "ttt-parallel"],
)
def test_retention_keeps_the_state_bounded_where_the_original_grows(cls, options):
    """The same frame streamed 400 times: with retention (horizons 2-16 frames) the fast weight
    saturates; without it, it keeps growing (the persistent sum of updates)."""
    x = torch.randn(1, 1, 8, C, generator=torch.Generator().manual_seed(3))
    growth = {}
    for frames in ((2, 16), None):
        torch.manual_seed(3)  # the same projections and slow weights in both layers
        layer = cls(C, H, base_lr=0.05, retention_frames=frames, **options)
        cache, norms = layer.init_cache(1), []
        with torch.no_grad():
            for _ in range(400):
                _, cache = layer(x, cache)
                norms.append(fast_weight(cache).norm().item())
        growth[frames] = norms[-1] / norms[199]
    assert growth[(2, 16)] < 1.01, growth
    assert growth[None] > 1.3, growth


def fast_weight(cache):
    """The deviation of w1 (reduced / parallel caches) or w1 itself (fsm) from a layer cache."""
    if getattr(cache, "state", None) is not None:
        return cache.state
    return cache.recurrent.weights.w1


@pytest.mark.parametrize("cls, options, message", BAD)
def test_bad_config_raises_clear_value_error(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(C, H, **options)


@pytest.mark.parametrize("cls", [ElasticMemory, TTTMemory])
def test_bad_shapes_raise_clear_value_error(cls):
    with pytest.raises(ValueError, match="dim 30 must be a positive multiple"):
        cls(30, 4)
    with pytest.raises(ValueError, match=r"expected x of shape \[B, T, P, 32\]"):
        cls(C, H)(torch.randn(2, 5, 31))


def test_bench_script_writes_every_case(tmp_path):
    """tools/bench/bench_ttt.py on a tiny clip: a JSON row per case, positive times, baseline = 1x."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "bench" / "bench_ttt.py"
    spec = importlib.util.spec_from_file_location("bench_ttt", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = [
        "--frames",
        "2",
        "--tokens",
        "4",
        "--dim",
        "16",
        "--heads",
        "2",
        "--repeats",
        "1",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows][:1] == [bench.BASELINE] and len(rows) == 9
    assert all(r["median_ms"] > 0 and len(r["times_s"]) == 1 for r in rows)
    assert rows[0]["speedup_vs_lact"] == 1.0


def test_cache_of_another_form_raises_clear_type_error():
    x = torch.randn(1, 1, 4, C)
    with pytest.raises(TypeError, match="cache must be a FastWeightCache with 'recurrent' set"):
        ElasticMemory(C, H, form="sequential")(x, ElasticMemory(C, H).init_cache(1))
    with pytest.raises(TypeError, match="cache must be a FastWeightCache with 'state' set"):
        TTTMemory(C, H, form="parallel", **PLAIN)(x, TTTMemory(C, H).init_cache(1))
