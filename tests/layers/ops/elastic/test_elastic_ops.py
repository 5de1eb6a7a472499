"""layers.ops.elastic: the reduction (eigen-decomposition), parallel == sequential, FSM estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layers.ops.elastic import (
    elastic_chunk_step,
    elastic_components,
    elastic_decay,
    elastic_parallel,
    elastic_sequential,
    init_elastic_state,
)
from layers.ops.ttt import FastWeights, fast_weight_linear_attention
from layers.ops.ttt.swiglu import sequence_features
from tests.layers.ops.ttt.test_ttt_ops import make_inputs, random_retention
from tests.numerics import assert_rel_close

F64 = torch.float64

SHAPES = [
    pytest.param(1, 1, 1, 8, 16, 8, 4, id="B1-T1-H1-K8-Dh16-C4"),
    pytest.param(2, 63, 2, 24, 20, 12, 16, id="B2-T63-H2-K24-Dh20-V12-C16"),
    pytest.param(1, 75, 3, 12, 36, 16, 10, id="B1-T75-H3-K12-Dh36-V16-C10"),
    pytest.param(1, 50, 1, 8, 8, 8, 1, id="B1-T50-H1-K8-C1-per-token"),
]

COEFFS = [
    pytest.param(0.7, 0.9, id="lam0.7-beta0.9"),
    pytest.param(0.3, 0.0, id="lam0.3-beta0-streaming"),
    pytest.param(1.0, 0.99, id="lam1-beta0.99"),
]


def random_importance(H, Dh):
    """F in (0, 1], including exact 1 entries (rho = 0 for lam = 1)."""
    F = torch.rand(H, Dh, dtype=F64).clamp_min(1e-3)
    F[0, 0] = 1.0
    return F


@pytest.mark.parametrize("lam_f, beta", [(0.2, 0.9), (0.9, 0.5), (1.0, 0.3), (0.05, 0.0)])
def test_decay_coefficients_match_eigendecomposition(lam_f, beta):
    """Independent check with numpy: powers of the 2x2 (weight, anchor) map, first entry = a + b rho^n."""
    M = np.array([[1 - lam_f, lam_f], [(1 - beta) * (1 - lam_f), beta + (1 - beta) * lam_f]])
    a, b, rho = (
        float(x)
        for x in elastic_decay(
            torch.tensor(lam_f, dtype=F64), torch.ones(1, dtype=F64), torch.tensor(beta, dtype=F64)
        )
    )
    assert sorted(np.linalg.eigvals(M).real) == pytest.approx(sorted([rho, 1.0]), abs=1e-12)
    for n in range(1, 6):
        assert np.linalg.matrix_power(M, n)[0, 0] == pytest.approx(a + b * rho**n, abs=1e-12)


@pytest.mark.parametrize("lam_f, beta, gamma", [(0.2, 0.9, 0.99), (0.9, 0.5, 0.8), (1.0, 0.3, 0.5)])
def test_retention_scales_both_eigenvalues(lam_f, beta, gamma):
    """numpy: with retention the map on deviations is gamma M, first entry a gamma^n + b (gamma rho)^n."""
    M = gamma * np.array([[1 - lam_f, lam_f], [(1 - beta) * (1 - lam_f), beta + (1 - beta) * lam_f]])
    as64 = lambda x: torch.tensor(x, dtype=F64)
    (a, g1), (b, g2) = elastic_components(as64(lam_f), torch.ones(1, dtype=F64), as64(beta), as64(gamma))
    for n in range(1, 6):
        expected = float(a * g1**n + b * g2**n)
        assert np.linalg.matrix_power(M, n)[0, 0] == pytest.approx(expected, abs=1e-12)


RETENTIONS = [None, 0.95, "per-unit"]


@pytest.mark.parametrize("inclusive", [False, True], ids=["strict", "inclusive"])
@pytest.mark.parametrize("retention", RETENTIONS, ids=["no-retention", "retention0.95", "retention-per-unit"])
@pytest.mark.parametrize("lam, beta", COEFFS)
@pytest.mark.parametrize("B, T, H, K, Dh, V, C", SHAPES)
def test_parallel_equals_sequential_float64(B, T, H, K, Dh, V, C, lam, beta, retention, inclusive):
    inputs = make_inputs(B, T, H, K, Dh, V)
    F = random_importance(H, Dh)
    if retention == "per-unit":
        retention = random_retention(H, Dh, low=0.5)
    o_seq = elastic_sequential(*inputs, C, lam, F, beta, inclusive=inclusive, retention=retention)
    o_par = elastic_parallel(*inputs, C, lam, F, beta, inclusive=inclusive, retention=retention)
    assert_rel_close(o_seq, o_par, 1e-12, "o")


@pytest.mark.parametrize("with_retention", [False, True], ids=["no-retention", "retention"])
@pytest.mark.parametrize("inclusive", [False, True], ids=["strict", "inclusive"])
def test_parallel_gradients_equal_sequential(inclusive, with_retention):
    names = ["q", "k", "v", "eta", "w0", "w1", "w2", "lam", "F", "beta"]
    inputs = make_inputs(2, 29, 2, 8, 12, 6, requires_grad=True)
    lam = torch.tensor(0.8, dtype=F64, requires_grad=True)
    F = (torch.rand(2, 12, dtype=F64) * 0.9 + 0.05).requires_grad_(True)
    beta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    leaves = [*inputs, lam, F, beta]
    retention = None
    if with_retention:
        retention = random_retention(2, 12, low=0.6).requires_grad_(True)
        leaves.append(retention)
        names.append("retention")
    grad_o = torch.randn(2, 29, 2, 6, dtype=F64)

    def grads(fn):
        o = fn(*inputs, 8, lam, F, beta, inclusive=inclusive, retention=retention)
        return torch.autograd.grad((o * grad_o).sum(), leaves)

    for name, g_seq, g_par in zip(names, grads(elastic_sequential), grads(elastic_parallel), strict=True):
        assert_rel_close(g_seq, g_par, 1e-11, f"grad {name}")


def test_lam_f_one_keeps_the_slow_weights():
    """lam F = 1 pulls W back onto the anchor, which never leaves w1_0: o = phi(q) w1_0 (hand case)."""
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 30, 2, 8, 12, 6)
    expected = torch.einsum("bthd,bhdv->bthv", sequence_features(q, w0, w2), w1)
    for fn in (elastic_sequential, elastic_parallel):
        o = fn(q, k, v, eta, w0, w1, w2, 7, 1.0, torch.ones(2, 12, dtype=F64), 0.6, inclusive=True)
        assert_rel_close(expected, o, 1e-13, fn.__name__)


def test_global_anchor_is_pure_decay_toward_slow_weights():
    """Global anchor (A = w1_0 fixed) with static F: W_c - w1_0 = (1 - lam F) (W_{c-1} - w1_0 + U_c),
    one decaying component of weight 1 and rho = 1 - lam F."""
    B, T, H, K, Dh, V, C = 1, 41, 2, 8, 12, 6, 8
    q, k, v, eta, w0, w1, w2 = make_inputs(B, T, H, K, Dh, V)
    lam, F = 0.6, random_importance(H, Dh)
    state = init_elastic_state(FastWeights(w0, w1, w2), False, "static")
    qh, kh, vh, eh = (t.transpose(1, 2) for t in (q, k, v, eta))
    outs = []
    for s in range(0, T, C):
        sl = slice(s, s + C)
        o, state = elastic_chunk_step(
            qh[:, :, sl],
            kh[:, :, sl],
            vh[:, :, sl],
            eh[:, :, sl],
            state,
            lam=lam,
            beta=0.0,
            F=F,
            anchor_policy="global",
        )
        outs.append(o)
    o_seq = torch.cat(outs, dim=2).transpose(1, 2)
    components = ((torch.ones(H, Dh, dtype=F64), 1.0 - lam * F),)
    phq, phk = sequence_features(q, w0, w2), sequence_features(k, w0, w2)
    o_ref, _ = fast_weight_linear_attention(phq, phk, eta[..., None] * v, w1, C, components=components)
    assert_rel_close(o_ref, o_seq, 1e-12, "o global anchor")


@pytest.mark.parametrize("estimator", ["abs", "sq", "si"])
def test_fsm_first_chunk_by_hand(estimator):
    """One chunk, any anchor: F_ema = (1 - gamma) s, normalised by its max; W = W' - lam F (W' - w1_0)."""
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 6, 2, 8, 12, 6)
    qh, kh, vh, eh = (t.transpose(1, 2) for t in (q, k, v, eta))
    state = init_elastic_state(FastWeights(w0, w1, w2), False, estimator)
    _, state = elastic_chunk_step(
        qh,
        kh,
        vh,
        eh,
        state,
        lam=0.8,
        beta=0.5,
        estimator=estimator,
        anchor_policy="streaming-ema",
        importance_decay=0.9,
    )
    phk = sequence_features(k, w0, w2)
    U = torch.einsum("bthd,bthv->bhdv", phk, eta[..., None] * v)
    signal = {"abs": U.abs(), "sq": U**2, "si": (U * U).abs()}[estimator]  # W' - A = U on the first chunk
    imp = 0.1 * signal
    imp = imp / imp.amax(dim=(-2, -1), keepdim=True)
    w_expected = (w1 + U) - 0.8 * imp * U
    assert_rel_close(w_expected, state.weights.w1, 1e-13, "w1")
    assert_rel_close(0.5 * w1 + 0.5 * w_expected, state.anchors[1], 1e-13, "anchor")
    assert state.weights.w0 is w0 and state.anchors[0] is None


@pytest.mark.parametrize("update_hidden", [False, True], ids=["w1-only", "update-hidden"])
def test_fsm_streaming_anchor_equals_ema_with_beta_zero(update_hidden):
    q, k, v, eta, w0, w1, w2 = (
        t.transpose(1, 2) if i < 4 else t for i, t in enumerate(make_inputs(1, 24, 2, 8, 12, 6))
    )
    runs = []
    for policy, beta in (("streaming", 0.77), ("streaming-ema", 0.0)):
        state = init_elastic_state(FastWeights(w0, w1, w2), update_hidden, "si")
        outs = []
        for s in range(0, 24, 6):
            sl = slice(s, s + 6)
            o, state = elastic_chunk_step(
                q[:, :, sl],
                k[:, :, sl],
                v[:, :, sl],
                eta[:, :, sl],
                state,
                lam=0.5,
                beta=beta,
                estimator="si",
                anchor_policy=policy,
                update_hidden=update_hidden,
            )
            outs.append(o)
        runs.append(torch.cat(outs, dim=2))
    assert_rel_close(runs[1], runs[0], 1e-14, "streaming vs streaming-ema(beta=0)")


BAD = [
    pytest.param({"chunk_size": 0}, "chunk_size must be >= 1", id="chunk0"),
    pytest.param({"lam": 3.0}, r"lam \* F must lie in \(0, 1\]", id="lamF-above-1"),
    pytest.param({"F": torch.zeros(2, 12)}, r"lam \* F must lie in \(0, 1\]", id="F-zero"),
    pytest.param({"F": torch.ones(2, 11)}, r"F must be a tensor \[H, Dh\]", id="F-shape"),
    pytest.param({"beta": 1.0}, r"beta must be in \[0, 1\)", id="beta1"),
    pytest.param({"beta": -0.1}, r"beta must be in \[0, 1\)", id="beta-negative"),
    pytest.param({"w1": torch.zeros(1, 2, 12, 5)}, "w1 must be", id="w1-value-mismatch"),
    pytest.param({"retention": -0.5}, r"retention must lie in \(0, 1\]", id="retention-negative"),
    pytest.param({"retention": torch.full((3, 12), 0.9)}, r"retention must be a scalar or \[H, Dh\]",
                 id="retention-shape"),
]


@pytest.mark.parametrize("override, message", BAD)
@pytest.mark.parametrize("fn", [elastic_sequential, elastic_parallel], ids=["sequential", "parallel"])
def test_bad_input_raises_clear_value_error(fn, override, message):
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 10, 2, 8, 12, 6, dtype=torch.float32)
    args = dict(
        q=q,
        k=k,
        v=v,
        eta=eta,
        w0=w0,
        w1=w1,
        w2=w2,
        chunk_size=4,
        lam=0.5,
        F=torch.full((2, 12), 0.5),
        beta=0.9,
    )
    args.update(override)
    with pytest.raises(ValueError, match=message):
        fn(**args)
