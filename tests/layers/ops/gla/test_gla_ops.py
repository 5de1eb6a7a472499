"""Gated linear attention ops: the reference loop and the chunked torch form.

References: a hand-computed two-token case, the block-causal linear-attention loop of
``layers.ops.block_la`` with one-token blocks (an independent implementation of the same
recursion), and ``naive_recurrent_gla`` in float64 for every fast form. Outputs, the final state
and the gradients of q, k, v, g and the initial state are compared by relative RMS error, with a
NaN check first (``tests.numerics.assert_rel_close``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from layers.ops.block_la import naive_block_la
from layers.ops.gla import chunk_gla, naive_recurrent_gla
from tests.numerics import assert_rel_close

NAMES = ("o", "final_state", "dq", "dk", "dv", "dg", "dh0")


def make_inputs(B, T, H, K, V, decay="mild", dtype=torch.float32, seed=0, initial_state=True):
    """q, k, v ~ N(0, 1), g by decay regime ("mild": logsigmoid(x)/4, "strong": about -20, "none": 0)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    k = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    v = torch.randn(B, T, H, V, generator=gen, dtype=torch.float64)
    x = torch.randn(B, T, H, K, generator=gen, dtype=torch.float64)
    if decay == "mild":
        g = F.logsigmoid(x) / 4
    elif decay == "strong":
        g = -20.0 + 0.5 * x.clamp(-1, 1)
    elif decay == "none":
        g = torch.zeros_like(x)
    else:
        raise ValueError(decay)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64) if initial_state else None
    return [t.to(dtype) if t is not None else None for t in (q, k, v, g, h0)]


def run_with_grads(fn, q, k, v, g, h0, **kwargs):
    """Forward with the final state, backward of a loss that uses both; returns the 7 tensors of NAMES."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (q, k, v, g, h0)]
    o, s = fn(*leaves[:4], initial_state=leaves[4], output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(1)
    w_o = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)
    w_s = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s)
    loss = (o * w_o).sum() + (s * w_s).sum()
    inputs = [t for t in leaves if t is not None]
    grads = list(torch.autograd.grad(loss, inputs))
    if h0 is None:
        grads.append(None)
    return [o.detach(), s.detach()] + grads


def assert_all_close(ref, got, tols):
    for name, r, x in zip(NAMES, ref, got, strict=True):
        if r is None:
            assert x is None, name
            continue
        assert_rel_close(r, x, tols.get(name, tols["default"]), name)


def test_hand_computed_two_tokens():
    # K = V = 1: S0 = e^g0 h0 + k0 v0, o0 = s q0 S0; S1 = e^g1 S0 + k1 v1, o1 = s q1 S1.
    q = torch.tensor([2.0, -1.0], dtype=torch.float64).view(1, 2, 1, 1)
    k = torch.tensor([0.5, 3.0], dtype=torch.float64).view(1, 2, 1, 1)
    v = torch.tensor([4.0, 1.5], dtype=torch.float64).view(1, 2, 1, 1)
    g = torch.tensor([-0.3, -1.2], dtype=torch.float64).view(1, 2, 1, 1)
    h0 = torch.tensor([[[[0.7]]]], dtype=torch.float64)
    s0 = math.exp(-0.3) * 0.7 + 0.5 * 4.0
    s1 = math.exp(-1.2) * s0 + 3.0 * 1.5
    scale = 0.5
    o_expected = torch.tensor([scale * 2.0 * s0, scale * -1.0 * s1], dtype=torch.float64)
    for fn in (naive_recurrent_gla, chunk_gla):
        o, s = fn(q, k, v, g, scale=scale, initial_state=h0, output_final_state=True)
        torch.testing.assert_close(o.flatten(), o_expected)
        torch.testing.assert_close(s.flatten(), torch.tensor([s1], dtype=torch.float64))


@pytest.mark.parametrize("B,T,H,K,V", [
    pytest.param(2, 37, 2, 24, 20, id="B2-T37-H2-K24-V20"),
    pytest.param(1, 75, 1, 60, 16, id="B1-T75-H1-K60-V16"),
])
def test_naive_equals_block_la_with_one_token_blocks(B, T, H, K, V):
    q, k, v, g, h0 = make_inputs(B, T, H, K, V, dtype=torch.float64)
    o, s = naive_recurrent_gla(q, k, v, g, scale=0.3, initial_state=h0, output_final_state=True)
    o_ref, s_ref = naive_block_la(q, k, v, g, block_size=1, scale=0.3, inclusive=True, initial_state=h0,
                                  output_final_state=True)
    assert_rel_close(o_ref, o, 1e-13, "o")
    assert_rel_close(s_ref, s, 1e-13, "final_state")


CASES = [  # B, T, H, K, V, chunk_size
    pytest.param(2, 1, 2, 24, 16, 64, id="B2-T1-H2-K24-V16-C64"),
    pytest.param(2, 63, 2, 24, 32, 64, id="B2-T63-H2-K24-V32-C64"),
    pytest.param(1, 75, 2, 60, 20, 16, id="B1-T75-H2-K60-V20-C16"),
    pytest.param(1, 75, 1, 60, 60, 32, id="B1-T75-H1-K60-V60-C32"),
    pytest.param(2, 200, 2, 24, 24, 64, id="B2-T200-H2-K24-V24-C64"),
    pytest.param(1, 200, 1, 32, 16, 8, id="B1-T200-H1-K32-V16-C8"),
    pytest.param(1, 200, 1, 16, 16, 128, id="B1-T200-H1-K16-V16-C128"),
]


@pytest.mark.parametrize("B,T,H,K,V,C", CASES)
def test_chunk_float64_matches_reference(B, T, H, K, V, C):
    inputs = make_inputs(B, T, H, K, V, dtype=torch.float64)
    ref = run_with_grads(naive_recurrent_gla, *inputs)
    got = run_with_grads(chunk_gla, *inputs, chunk_size=C)
    assert got[1].dtype == torch.float64
    assert_all_close(ref, got, {"default": 1e-12})


@pytest.mark.parametrize("B,T,H,K,V,C", CASES)
def test_chunk_float32_matches_float64_reference(B, T, H, K, V, C):
    inputs = make_inputs(B, T, H, K, V, dtype=torch.float64)
    ref = run_with_grads(naive_recurrent_gla, *inputs)
    got = run_with_grads(chunk_gla, *[t.float() for t in inputs], chunk_size=C)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert_all_close(ref, got, {"default": 2e-6, "dg": 1e-5})


@pytest.mark.parametrize("decay", ["strong", "none"])
@pytest.mark.parametrize("T,C", [pytest.param(75, 16, id="T75-C16"), pytest.param(200, 64, id="T200-C64")])
def test_chunk_extreme_decay_finite_and_exact(decay, T, C):
    inputs = make_inputs(1, T, 2, 24, 16, decay=decay, dtype=torch.float64)
    ref = run_with_grads(naive_recurrent_gla, *inputs)
    got = run_with_grads(chunk_gla, *[t.float() for t in inputs], chunk_size=C)
    for name, x in zip(NAMES, got, strict=True):
        assert torch.isfinite(x).all(), f"{name} has non-finite values with decay={decay}"
    # dg under strong decay is dominated by one-step pairs exp(G_t - G_s) whose exponent is a
    # difference of in-chunk cumulative sums of size up to 20 C: it carries a rounding error of
    # about eps32 * 20 C (relative), which bounds dg's accuracy in any chunked fp32 form.
    dg_tol = 2 * 2.0**-24 * 20 * C if decay == "strong" else 1e-5
    assert_all_close(ref, got, {"default": 2e-6, "dg": dg_tol})


def test_chunk_without_initial_state():
    inputs = make_inputs(2, 50, 2, 16, 16, dtype=torch.float64, initial_state=False)
    ref = run_with_grads(naive_recurrent_gla, *inputs)
    got = run_with_grads(chunk_gla, *inputs, chunk_size=16)
    assert_all_close(ref, got, {"default": 1e-12})


@pytest.mark.parametrize("split", [1, 40, 64, 130])
def test_split_sequence_equals_one_call(split):
    q, k, v, g, h0 = make_inputs(2, 131, 2, 24, 20, dtype=torch.float32)
    o_full, s_full = chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    o_a, s_a = chunk_gla(q[:, :split], k[:, :split], v[:, :split], g[:, :split], initial_state=h0,
                         output_final_state=True)
    o_b, s_b = chunk_gla(q[:, split:], k[:, split:], v[:, split:], g[:, split:], initial_state=s_a,
                         output_final_state=True)
    assert_rel_close(o_full, torch.cat([o_a, o_b], dim=1), 1e-6, "o")
    assert_rel_close(s_full, s_b, 1e-6, "final_state")


def test_split_sequence_gradient_through_carried_state():
    inputs = make_inputs(1, 90, 2, 16, 16, dtype=torch.float64)
    ref = run_with_grads(naive_recurrent_gla, *inputs)

    def two_calls(q, k, v, g, initial_state, output_final_state, chunk_size):
        o_a, s_a = chunk_gla(q[:, :33], k[:, :33], v[:, :33], g[:, :33], initial_state=initial_state,
                             output_final_state=True, chunk_size=chunk_size)
        o_b, s_b = chunk_gla(q[:, 33:], k[:, 33:], v[:, 33:], g[:, 33:], initial_state=s_a,
                             output_final_state=output_final_state, chunk_size=chunk_size)
        return torch.cat([o_a, o_b], dim=1), s_b

    got = run_with_grads(two_calls, *inputs, chunk_size=16)
    assert_all_close(ref, got, {"default": 1e-12})


def test_half_precision_inputs_forward():
    q, k, v, g, h0 = make_inputs(1, 70, 2, 32, 32, dtype=torch.float64)
    q16, k16, v16 = (t.half() for t in (q, k, v))
    o_ref, s_ref = naive_recurrent_gla(q16.double(), k16.double(), v16.double(), g, initial_state=h0,
                                       output_final_state=True)
    o, s = chunk_gla(q16, k16, v16, g.float(), initial_state=h0.float(), output_final_state=True)
    assert o.dtype == torch.float16 and s.dtype == torch.float32
    assert_rel_close(o_ref, o, 2e-3, "o (fp16 output rounding)")
    assert_rel_close(s_ref, s, 1e-5, "final_state")


def test_empty_sequence_returns_initial_state():
    q, k, v, g, h0 = make_inputs(1, 0, 2, 8, 4)
    o, s = chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    assert o.shape == (1, 0, 2, 4)
    torch.testing.assert_close(s, h0)


BAD = [
    pytest.param(dict(k=torch.zeros(1, 5, 2, 7)), "k must have q's shape", id="k-shape"),
    pytest.param(dict(g=torch.zeros(1, 5, 3, 8)), "g must have q's shape", id="g-shape"),
    pytest.param(dict(v=torch.zeros(1, 6, 2, 4)), "v must be", id="v-length"),
    pytest.param(dict(v=torch.zeros(1, 5, 2, 4, dtype=torch.float64)), "share one dtype", id="v-dtype"),
    pytest.param(dict(g=torch.full((1, 5, 2, 8), 0.1)), "must be <= 0", id="positive-decay"),
    pytest.param(dict(initial_state=torch.zeros(1, 2, 4, 8)), r"initial_state must be \[B, H, K, V\]",
                 id="initial-state-shape"),
    pytest.param(dict(q=torch.zeros(5, 2, 8)), "q must be 4-D", id="q-3d"),
    pytest.param(dict(chunk_size=48), "power of two", id="chunk-48"),
    pytest.param(dict(backend="cuda"), "backend must be", id="unknown-backend"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_input_raises_clear_error(override, message):
    args = dict(q=torch.zeros(1, 5, 2, 8), k=torch.zeros(1, 5, 2, 8), v=torch.zeros(1, 5, 2, 4),
                g=torch.zeros(1, 5, 2, 8))
    args.update(override)
    with pytest.raises(ValueError, match=message):
        chunk_gla(**args)
    if "chunk_size" not in override and "backend" not in override:
        with pytest.raises(ValueError, match=message):
            naive_recurrent_gla(**args)
