"""Gated delta rule (per-channel decay): chunked form vs the float64 token loop, closed forms, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layers.ops.gated_delta import chunk_gated_delta, naive_recurrent_gated_delta
from layers.ops.gla import naive_recurrent_gla
from tests.numerics import assert_rel_close

NAMES = ("o", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dh0")


def make_inputs(B, T, H, K, V, decay="mild", seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    x = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    decays = {"mild": F.logsigmoid(x) / 4, "strong": -20 + 0.5 * x.clamp(-1, 1), "none": 0 * x}
    g = decays[decay]
    beta = torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    return [q, k, v, g, beta, h0]


def run_with_grads(fn, q, k, v, g, beta, h0, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, g, beta, h0)]
    o, s = fn(*leaves[:5], initial_state=leaves[5], output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(1)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum()
    loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s.dtype)).sum()
    return [o.detach(), s.detach()] + list(torch.autograd.grad(loss, leaves))


def test_delta_write_overwrites_the_value_of_a_key():
    # g = 0, beta = 1, one unit key written twice: S^T k reads the second value (closed form).
    k = F.normalize(torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64), dim=0)
    k = k.view(1, 1, 1, 3).repeat(1, 2, 1, 1)
    v = torch.tensor([[3.0, -1.0], [0.5, 4.0]], dtype=torch.float64).view(1, 2, 1, 2)
    g = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    beta = torch.ones(1, 2, 1, dtype=torch.float64)
    for fn in (naive_recurrent_gated_delta, chunk_gated_delta):
        o, s = fn(k, k, v, g, beta, scale=1.0, output_final_state=True)
        torch.testing.assert_close(o[0, :, 0], v[0, :, 0])  # reading with the written key
        torch.testing.assert_close(s[0, 0], k[0, 0, 0, :, None] * v[0, 1, 0][None, :])


def test_zero_beta_only_decays_the_initial_state():
    q, k, v, g, _, h0 = make_inputs(1, 20, 2, 8, 4)
    zero = torch.zeros(1, 20, 2, dtype=torch.float64)
    o, s = chunk_gated_delta(q, k, v, g, zero, initial_state=h0, output_final_state=True)
    o_ref, s_ref = naive_recurrent_gla(q, k, torch.zeros_like(v), g, initial_state=h0,
                                       output_final_state=True)
    assert_rel_close(o_ref, o, 1e-12, "o")
    assert_rel_close(s_ref, s, 1e-12, "final_state")


CASES = [
    pytest.param(2, 1, 2, 24, 16, 64, id="B2-T1-H2-K24-V16-C64"),
    pytest.param(2, 63, 2, 24, 32, 64, id="B2-T63-H2-K24-V32-C64"),
    pytest.param(1, 75, 2, 60, 20, 16, id="B1-T75-H2-K60-V20-C16"),
    pytest.param(1, 200, 1, 32, 16, 32, id="B1-T200-H1-K32-V16-C32"),
]


@pytest.mark.parametrize("B,T,H,K,V,C", CASES)
def test_chunk_matches_reference(B, T, H, K, V, C):
    inputs = make_inputs(B, T, H, K, V)
    ref = run_with_grads(naive_recurrent_gated_delta, *inputs)
    got64 = run_with_grads(chunk_gated_delta, *inputs, chunk_size=C)
    for name, r, x in zip(NAMES, ref, got64, strict=True):
        assert_rel_close(r, x, 1e-12, name)
    got32 = run_with_grads(chunk_gated_delta, *[t.float() for t in inputs], chunk_size=C)
    for name, r, x in zip(NAMES, ref, got32, strict=True):
        assert_rel_close(r, x, 1e-5, name)


@pytest.mark.parametrize("decay", ["strong", "none"])
def test_extreme_decay_finite_and_exact(decay):
    inputs = make_inputs(1, 75, 2, 24, 16, decay=decay)
    ref = run_with_grads(naive_recurrent_gated_delta, *inputs)
    got = run_with_grads(chunk_gated_delta, *inputs, chunk_size=32)
    for name, r, x in zip(NAMES, ref, got, strict=True):
        assert_rel_close(r, x, 1e-11, name)


def test_split_sequence_equals_one_call():
    q, k, v, g, beta, h0 = (t.float() for t in make_inputs(2, 90, 2, 16, 16))
    o, s = chunk_gated_delta(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o_a, s_a = chunk_gated_delta(q[:, :37], k[:, :37], v[:, :37], g[:, :37], beta[:, :37], initial_state=h0,
                                 output_final_state=True)
    o_b, s_b = chunk_gated_delta(q[:, 37:], k[:, 37:], v[:, 37:], g[:, 37:], beta[:, 37:], initial_state=s_a,
                                 output_final_state=True)
    assert_rel_close(o, torch.cat([o_a, o_b], 1), 1e-6, "o")
    assert_rel_close(s, s_b, 1e-6, "final_state")


@pytest.mark.parametrize("beta,message", [
    pytest.param(torch.rand(1, 5, 3), r"beta must be a floating tensor \[B, T, H\]", id="beta-shape"),
    pytest.param(torch.full((1, 5, 2), 1.5), r"beta must lie in \[0, 1\]", id="beta-range"),
])
def test_bad_beta_raises_clear_error(beta, message):
    q = k = torch.zeros(1, 5, 2, 8)
    for fn in (naive_recurrent_gated_delta, chunk_gated_delta):
        with pytest.raises(ValueError, match=message):
            fn(q, k, torch.zeros(1, 5, 2, 4), torch.zeros(1, 5, 2, 8), beta)
