"""Block-causal linear attention: reference loop vs a dense closed form, torch parallel form vs the loop."""

from __future__ import annotations

import math

import pytest
import torch

from layers.ops.block_la import chunk_block_la, naive_block_la
from tests.numerics import assert_rel_close

GRAD_NAMES = ("q", "k", "v", "initial_state", "g")


def make_inputs(B, T, H, K, V, block_size, decay, dtype=torch.float64, with_state=True):
    """Random q, k, v, per-block log-decay (None, or uniform in [-decay, 0]) and initial state."""
    q = torch.randn(B, T, H, K, dtype=dtype)
    k = torch.randn(B, T, H, K, dtype=dtype) / math.sqrt(K)
    v = torch.randn(B, T, H, V, dtype=dtype)
    nb = math.ceil(T / block_size)
    g = None if decay is None else -decay * torch.rand(B, nb, H, K, dtype=dtype)
    s0 = torch.randn(B, H, K, V, dtype=dtype) if with_state else None
    return q, k, v, g, s0


def run_with_grads(fn, inputs, block_size, inclusive, scale, do, dfs, cast=None):
    """Call ``fn`` with leaf copies of ``inputs`` (cast to ``cast``), return outputs and input grads."""
    leaves = [None if x is None else (x.to(cast) if cast else x.clone()).requires_grad_() for x in inputs]
    q, k, v, g, s0 = leaves
    o, fs = fn(q, k, v, g, block_size, scale, inclusive, s0, True)
    loss = (o.double() * do).sum() + (fs.double() * dfs).sum()
    wrt = [x for x in (q, k, v, s0, g) if x is not None]
    grads = torch.autograd.grad(loss, wrt)
    names = [n for n, x in zip(GRAD_NAMES, (q, k, v, s0, g), strict=True) if x is not None]
    return o, fs, dict(zip(names, grads, strict=True))


def dense_reference(q, k, v, g, block_size, scale, inclusive, s0):
    """Closed form by explicit token pairs (float64): o_i = scale * sum_j [mask] (q_i * d_ij) . k_j v_j.

    d_ij = exp(sum of the block decays applied between token j's write and token i's read).
    """
    B, T, H, K = q.shape
    nb = math.ceil(T / block_size)
    gg = torch.zeros(B, nb, H, K, dtype=torch.float64) if g is None else g.double()
    blk = [i // block_size for i in range(T)]
    o = torch.zeros(B, T, H, v.shape[-1], dtype=torch.float64)
    for i in range(T):
        last_read = blk[i] if inclusive else blk[i] - 1  # state index the token reads
        decay0 = gg[:, : last_read + 1].sum(1)  # decays from the initial state to the read point
        o[:, i] += torch.einsum("bhk,bhkv->bhv", q[:, i].double() * decay0.exp(), s0.double())
        for j in range(T):
            if blk[j] > last_read:
                continue
            d = gg[:, blk[j] + 1 : last_read + 1].sum(1).exp()  # [B, H, K]
            w = (q[:, i].double() * d * k[:, j].double()).sum(-1)  # [B, H]
            o[:, i] += w[..., None] * v[:, j].double()
    final = gg.sum(1).exp()[..., None] * s0.double()
    for j in range(T):
        d = gg[:, blk[j] + 1 :].sum(1).exp()
        final += torch.einsum("bhk,bhv->bhkv", k[:, j].double() * d, v[:, j].double())
    return scale * o, final


@pytest.mark.parametrize("inclusive", [False, True], ids=["strict", "inclusive"])
@pytest.mark.parametrize(
    "B,T,H,K,V,block_size",
    [
        pytest.param(1, 1, 1, 3, 2, 4, id="T1-bs4"),
        pytest.param(2, 13, 2, 5, 3, 4, id="B2-T13-bs4"),
        pytest.param(1, 12, 1, 4, 4, 1, id="T12-bs1"),
        pytest.param(1, 9, 2, 3, 5, 9, id="T9-one-block"),
    ],
)
def test_naive_matches_dense_closed_form(B, T, H, K, V, block_size, inclusive):
    q, k, v, g, s0 = make_inputs(B, T, H, K, V, block_size, decay=2.0)
    o_ref, s_ref = dense_reference(q, k, v, g, block_size, 0.7, inclusive, s0)
    o, s = naive_block_la(q, k, v, g, block_size, 0.7, inclusive, s0, output_final_state=True)
    assert_rel_close(o_ref, o, 1e-12, "o")
    assert_rel_close(s_ref, s, 1e-12, "final_state")


SHAPES = [
    pytest.param(1, 1, 1, 16, 16, 64, id="B1-T1-K16-bs64"),
    pytest.param(2, 63, 2, 24, 20, 8, id="B2-T63-H2-K24-bs8"),
    pytest.param(1, 75, 2, 60, 16, 7, id="B1-T75-H2-K60-bs7"),
    pytest.param(1, 200, 1, 16, 12, 1, id="B1-T200-K16-bs1"),
    pytest.param(1, 200, 2, 24, 16, 3, id="B1-T200-H2-K24-bs3"),
    pytest.param(1, 75, 1, 16, 8, 64, id="B1-T75-K16-bs64"),
    pytest.param(1, 600, 1, 16, 16, 256, id="B1-T600-K16-bs256"),
    pytest.param(2, 40, 1, 8, 8, 20, id="B2-T40-K8-bs20"),
]
DECAYS = [pytest.param(None, id="no-decay"), pytest.param(1.0, id="decay1"), pytest.param(20.0, id="decay20")]
MODES = [pytest.param(False, id="strict"), pytest.param(True, id="inclusive")]


@pytest.mark.parametrize("inclusive", MODES)
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("B,T,H,K,V,block_size", SHAPES)
def test_chunk_matches_naive_float64(B, T, H, K, V, block_size, decay, inclusive):
    inputs = make_inputs(B, T, H, K, V, block_size, decay)
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    dfs = torch.randn(B, H, K, V, dtype=torch.float64)
    o_ref, s_ref, g_ref = run_with_grads(naive_block_la, inputs, block_size, inclusive, 0.5, do, dfs)
    o, s, grads = run_with_grads(chunk_block_la, inputs, block_size, inclusive, 0.5, do, dfs)
    assert_rel_close(o_ref, o, 1e-11, "o")
    assert_rel_close(s_ref, s, 1e-11, "final_state")
    for name, ref in g_ref.items():
        assert_rel_close(ref, grads[name], 1e-10, f"d{name}")


@pytest.mark.parametrize("inclusive", MODES)
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize(
    "B,T,H,K,V,block_size",
    [
        pytest.param(2, 63, 2, 24, 20, 8, id="B2-T63-H2-K24-bs8"),
        pytest.param(1, 200, 2, 60, 16, 1, id="B1-T200-H2-K60-bs1"),
        pytest.param(1, 600, 2, 32, 32, 256, id="B1-T600-H2-K32-bs256"),
    ],
)
def test_chunk_float32_vs_float64_reference(B, T, H, K, V, block_size, decay, inclusive):
    """float32 parallel form against the float64 loop: round-off only, also for g ~ -20 per block."""
    inputs = make_inputs(B, T, H, K, V, block_size, decay)
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    dfs = torch.randn(B, H, K, V, dtype=torch.float64)
    o_ref, s_ref, g_ref = run_with_grads(naive_block_la, inputs, block_size, inclusive, 0.5, do, dfs)
    o, s, grads = run_with_grads(
        chunk_block_la, inputs, block_size, inclusive, 0.5, do, dfs, cast=torch.float32
    )
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert_rel_close(o_ref, o, 2e-5, "o")
    assert_rel_close(s_ref, s, 2e-5, "final_state")
    for name, ref in g_ref.items():
        assert_rel_close(ref, grads[name], 1e-4 if name == "g" else 2e-5, f"d{name}")


@pytest.mark.parametrize("fn", [naive_block_la, chunk_block_la], ids=["naive", "chunk"])
@pytest.mark.parametrize("inclusive", MODES)
@pytest.mark.parametrize(
    "T,block_size,split",
    [pytest.param(75, 8, 40, id="T75-bs8-split40"), pytest.param(600, 256, 256, id="T600-bs256-split256")],
)
def test_split_sequence_equals_one_call(fn, T, block_size, split, inclusive):
    """Running [0:t] then [t:T] with the carried state equals one call on [0:T] (t on a block boundary)."""
    q, k, v, g, s0 = make_inputs(2, T, 2, 16, 8, block_size, decay=1.0, dtype=torch.float32)
    o_full, s_full = fn(q, k, v, g, block_size, 1.0, inclusive, s0, True)
    nb1 = split // block_size
    o1, s1 = fn(q[:, :split], k[:, :split], v[:, :split], g[:, :nb1], block_size, 1.0, inclusive, s0, True)
    o2, s2 = fn(q[:, split:], k[:, split:], v[:, split:], g[:, nb1:], block_size, 1.0, inclusive, s1, True)
    assert_rel_close(o_full, torch.cat([o1, o2], dim=1), 1e-6, "o")
    assert_rel_close(s_full, s2, 1e-6, "final_state")


@pytest.mark.parametrize("fn", [naive_block_la, chunk_block_la], ids=["naive", "chunk"])
def test_no_decay_equals_zero_decay_and_no_state_equals_zero_state(fn):
    q, k, v, _, _ = make_inputs(1, 50, 2, 16, 8, 6, decay=None, dtype=torch.float32)
    g0 = torch.zeros(1, 9, 2, 16)
    o_none, s_none = fn(q, k, v, None, 6, 1.0, True, None, True)
    o_zero, s_zero = fn(q, k, v, g0, 6, 1.0, True, torch.zeros(1, 2, 16, 8), True)
    assert_rel_close(o_zero, o_none, 1e-6, "o")
    assert_rel_close(s_zero, s_none, 1e-6, "final_state")
    o_nostate, s_nostate = fn(q, k, v, None, 6, 1.0, True, None, False)
    assert s_nostate is None
    assert_rel_close(o_none, o_nostate, 0.0, "o")


@pytest.mark.parametrize("block_size", [pytest.param(1, id="bs1"), pytest.param(16, id="bs16")])
def test_extreme_decay_stays_finite(block_size):
    """g = -1000 per block (exp underflows to 0): the parallel form never forms a positive exponent."""
    q, k, v, _, s0 = make_inputs(1, 64, 1, 16, 8, block_size, decay=None, dtype=torch.float32)
    g = torch.full((1, 64 // block_size, 1, 16), -1000.0)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, s0)]
    o, s = chunk_block_la(*leaves[:4], block_size, 1.0, False, leaves[4], True)
    (o.sum() + s.sum()).backward()
    for name, x in zip(("o", "final_state"), (o, s), strict=True):
        assert torch.isfinite(x).all(), name
    for name, x in zip(("q", "k", "v", "g", "initial_state"), leaves, strict=True):
        assert torch.isfinite(x.grad).all(), f"d{name}"
    o_ref, s_ref = naive_block_la(q, k, v, g, block_size, 1.0, False, s0, True)
    assert_rel_close(o_ref, o, 1e-6, "o")
    assert_rel_close(s_ref, s, 1e-6, "final_state")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_inputs_accumulate_in_float32(dtype):
    q, k, v, g, s0 = make_inputs(1, 70, 2, 16, 16, 8, decay=1.0, dtype=torch.float32)
    qh, kh, vh = q.to(dtype), k.to(dtype), v.to(dtype)
    o, s = chunk_block_la(qh, kh, vh, g, 8, 1.0, False, s0, True)
    assert o.dtype == dtype and s.dtype == torch.float32
    o_ref, s_ref = naive_block_la(
        qh.double(), kh.double(), vh.double(), g.double(), 8, 1.0, False, s0.double(), True
    )
    assert_rel_close(o_ref, o, 1e-2 if dtype == torch.bfloat16 else 2e-3, "o")
    assert_rel_close(s_ref, s, 1e-5, "final_state")


def test_chunk_gradcheck_float64():
    q, k, v, g, s0 = make_inputs(1, 11, 1, 3, 2, 2, decay=1.0)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, s0)]

    def f(q, k, v, g, s0):
        return chunk_block_la(q, k, v, g, 2, 0.9, False, s0, True)

    assert torch.autograd.gradcheck(f, leaves)


def test_empty_sequence_returns_initial_state():
    q, k, v, g, s0 = make_inputs(1, 0, 2, 4, 3, 4, decay=1.0, dtype=torch.float32)
    for fn in (naive_block_la, chunk_block_la):
        o, s = fn(q, k, v, g, 4, 1.0, False, s0, True)
        assert o.shape == (1, 0, 2, 3)
        assert torch.equal(s, s0)


def _bad(**over):
    q, k, v, g, s0 = make_inputs(1, 10, 2, 4, 3, 4, decay=1.0, dtype=torch.float32)
    args = dict(q=q, k=k, v=v, g=g, block_size=4, initial_state=s0)
    args.update(over)
    return args


BAD_INPUTS = [
    pytest.param(_bad(block_size=0), "block_size", id="block_size-0"),
    pytest.param(_bad(g=torch.full((1, 3, 2, 4), 0.1)), "g", id="positive-g"),
    pytest.param(_bad(g=torch.zeros(1, 2, 2, 4)), "g", id="g-wrong-num-blocks"),
    pytest.param(_bad(k=torch.randn(1, 10, 2, 5)), "k", id="k-shape"),
    pytest.param(_bad(v=torch.randn(1, 9, 2, 3)), "v", id="v-length"),
    pytest.param(_bad(v=torch.randn(1, 10, 2, 3, dtype=torch.float64)), "dtype", id="v-dtype"),
    pytest.param(_bad(q=torch.randn(10, 2, 4)), "q", id="q-3d"),
    pytest.param(_bad(initial_state=torch.zeros(1, 2, 3, 4)), "initial_state", id="state-transposed"),
]


@pytest.mark.parametrize("fn", [naive_block_la, chunk_block_la], ids=["naive", "chunk"])
@pytest.mark.parametrize("kwargs,needle", BAD_INPUTS)
def test_bad_input_raises_value_error_naming_argument(fn, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        fn(**kwargs)


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="backend"):
        chunk_block_la(**_bad(), backend="cuda")
