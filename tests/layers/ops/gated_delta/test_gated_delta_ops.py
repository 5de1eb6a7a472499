"""Gated delta rule (per-channel decay): chunked form vs the float64 token loop, closed forms, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layers.ops.gated_delta import chunk_gated_delta, naive_recurrent_gated_delta
from layers.ops.gated_delta.chunk import torch_chunk_gated_delta
from layers.ops.gla import naive_recurrent_gla
from tests.numerics import assert_rel_close

NAMES = ("o", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dh0")


def make_inputs(B, T, H, K, V, decay="mild", seed=0, beta="uniform"):
    """q, k (unit), v, g (decay: mild / strong (about -20) / none), beta (uniform in [0, 1], zero-one: a
    random mix of exactly 0 and 1, one: all 1), initial state; float64."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    x = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    decays = {"mild": F.logsigmoid(x) / 4, "strong": -20 + 0.5 * x.clamp(-1, 1), "none": 0 * x}
    g = decays[decay]
    u = torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    betas = {"uniform": u, "zero-one": (u > 0.5).double(), "one": torch.ones_like(u)}
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    return [q, k, v, g, betas[beta], h0]


def run_with_grads(fn, q, k, v, g, beta, h0, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, g, beta, h0)]
    o, s = fn(*leaves[:5], initial_state=leaves[5], output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(1)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum()
    loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s)).sum()
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


@pytest.mark.parametrize("decay", ["mild", "strong", "none"])
def test_per_head_decay_matches_reference(decay):
    # g [B, T, H]: one log-decay per token and head (the fast path), against the loop in float64 and
    # against the per-channel form with the decay broadcast to the key channels (float32).
    inputs = make_inputs(2, 75, 2, 24, 16, decay=decay)
    inputs[3] = inputs[3][..., 0].contiguous()
    ref = run_with_grads(naive_recurrent_gated_delta, *inputs)
    got = run_with_grads(chunk_gated_delta, *inputs, chunk_size=32)
    for name, r, x in zip(NAMES, ref, got, strict=True):
        assert_rel_close(r, x, 1e-11, name)
    inputs32 = [t.float() for t in inputs]
    per_head = run_with_grads(chunk_gated_delta, *inputs32, chunk_size=32)
    per_channel = run_with_grads(
        lambda q, k, v, g, *rest, **kw: chunk_gated_delta(q, k, v, g[..., None].expand(q.shape), *rest, **kw),
        *inputs32, chunk_size=32,
    )
    dg_tol = 2 * 2.0**-24 * 20 * 32 if decay == "strong" else 1e-5
    for name, r, x in zip(NAMES, per_channel, per_head, strict=True):
        assert_rel_close(r, x, dg_tol if name == "dg" else 1e-5, name)


@pytest.mark.parametrize("per_head", [False, True], ids=["per-channel", "per-head"])
def test_hand_backward_equals_autograd(per_head):
    # The hand-written backward against autograd through the same chunked forward (float64).
    inputs = make_inputs(1, 90, 2, 16, 12)
    if per_head:
        inputs[3] = inputs[3][..., 0].contiguous()

    def chunked(q, k, v, g, beta, initial_state, output_final_state, autograd):
        return torch_chunk_gated_delta(q, k, v, g, beta, 16**-0.5, initial_state, output_final_state, 32,
                                       autograd=autograd)

    hand = run_with_grads(chunked, *inputs, autograd=False)
    auto = run_with_grads(chunked, *inputs, autograd=True)
    for name, r, x in zip(NAMES, auto, hand, strict=True):
        assert_rel_close(r, x, 1e-12, name)


def test_zero_beta_one_beta_mixed_matches_reference():
    inputs = make_inputs(1, 70, 2, 16, 8, beta="zero-one")
    ref = run_with_grads(naive_recurrent_gated_delta, *inputs)
    got = run_with_grads(chunk_gated_delta, *inputs, chunk_size=32)
    for name, r, x in zip(NAMES, ref, got, strict=True):
        assert_rel_close(r, x, 1e-12, name)


def _bad(**changes):
    args = dict(q=torch.zeros(1, 5, 2, 8), k=torch.zeros(1, 5, 2, 8), v=torch.zeros(1, 5, 2, 4),
                g=torch.zeros(1, 5, 2, 8), beta=torch.zeros(1, 5, 2), initial_state=None)
    args.update(changes)
    return args


@pytest.mark.parametrize("args,message", [
    pytest.param(_bad(g=torch.full((1, 5, 2, 8), 0.1)), r"g is a log-decay and must be <= 0",
                 id="g-positive"),
    pytest.param(_bad(g=torch.full((1, 5, 2), 0.1)), r"g is a log-decay and must be <= 0",
                 id="g-per-head-positive"),
    pytest.param(_bad(g=torch.zeros(1, 5, 3)), r"per-head g must be a floating tensor \[B, T, H\]",
                 id="g-per-head-shape"),
    pytest.param(_bad(g=torch.zeros(1, 5, 2, 7)), r"g must have q's shape", id="g-shape"),
    pytest.param(_bad(k=torch.zeros(1, 5, 2, 8, dtype=torch.float64)), r"q, k, v must share one dtype",
                 id="k-dtype"),
    pytest.param(_bad(v=torch.zeros(1, 4, 2, 4)), r"v must be \[B, T, H, V\]", id="v-shape"),
    pytest.param(_bad(beta=torch.full((1, 5, 2), -0.5)), r"beta must lie in \[0, 1\]", id="beta-negative"),
    pytest.param(_bad(beta=torch.zeros(1, 5, 2, dtype=torch.long)), r"beta must be a floating tensor",
                 id="beta-int"),
    pytest.param(_bad(initial_state=torch.zeros(1, 2, 4, 8)), r"initial_state must be \[B, H, K, V\]",
                 id="initial-state-shape"),
])
def test_bad_input_names_the_argument(args, message):
    for backend in ("torch", "triton"):
        with pytest.raises(ValueError, match=message):
            chunk_gated_delta(**args, backend=backend)
    with pytest.raises(ValueError, match=message):
        naive_recurrent_gated_delta(**args)
