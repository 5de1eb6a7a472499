"""GLA Triton kernels (forward and backward) against the float64 reference loop.

On a CPU these run under the Triton interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py),
which is slow, so the default suite takes a handful of small cases and the broader sweep is marked
``slow``. On CUDA the same tests run the compiled kernels (IEEE fp32 dots: tf32 off), and an
optional test cross-checks against flash-linear-attention's ``chunk_gla`` when it is installed.

Tolerances (relative RMS): fp32 kernels vs the float64 loop, 2e-6 per tensor; dg 1e-5 for mild
decay; under strong decay (g about -20 per token) dg is bounded by the rounding of in-chunk
cumulative log-decays, about eps32 * 20 * C (see test_gla_ops.py).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from layers.ops.gla import chunk_gla, naive_recurrent_gla
from tests.layers.ops.gla.test_gla_ops import assert_all_close, make_inputs, run_with_grads
from tests.numerics import assert_rel_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
    reason="no CUDA device and TRITON_INTERPRET is not set (tests/conftest.py sets it on CPU machines)",
)


@pytest.fixture(autouse=True)
def _ieee_dots():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def check_against_reference(B, T, H, K, V, C, decay, initial_state=True):
    inputs = make_inputs(B, T, H, K, V, decay=decay, dtype=torch.float64, initial_state=initial_state)
    ref = run_with_grads(naive_recurrent_gla, *inputs)
    inputs32 = [x.float().to(DEVICE) if x is not None else None for x in inputs]
    got = run_with_grads(chunk_gla, *inputs32, chunk_size=C, backend="triton")
    got = [x.cpu() if x is not None else None for x in got]
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    dg_tol = 2 * 2.0**-24 * 20 * C if decay == "strong" else 1e-5
    assert_all_close(ref, got, {"default": 2e-6, "dg": dg_tol})


SMALL = [  # B, T, H, K, V, chunk_size, decay, initial_state
    pytest.param(1, 1, 2, 24, 20, 16, "mild", True, id="B1-T1-H2-K24-V20-C16"),
    pytest.param(1, 75, 2, 24, 20, 32, "strong", True, id="B1-T75-H2-K24-V20-C32-strong"),
    pytest.param(2, 40, 1, 60, 16, 16, "mild", False, id="B2-T40-H1-K60-V16-C16-no-h0"),
    pytest.param(1, 16, 1, 24, 20, 16, "none", True, id="B1-T16-H1-K24-V20-C16-no-decay"),
]


@pytest.mark.parametrize("B,T,H,K,V,C,decay,initial_state", SMALL)
def test_triton_matches_reference(B, T, H, K, V, C, decay, initial_state):
    check_against_reference(B, T, H, K, V, C, decay, initial_state)


SWEEP = [
    pytest.param(2, 63, 2, 24, 32, 64, "mild", True, id="B2-T63-H2-K24-V32-C64"),
    pytest.param(1, 75, 2, 60, 20, 16, "mild", True, id="B1-T75-H2-K60-V20-C16"),
    pytest.param(1, 200, 2, 32, 16, 64, "mild", True, id="B1-T200-H2-K32-V16-C64"),
    pytest.param(1, 200, 1, 24, 24, 32, "strong", True, id="B1-T200-H1-K24-V24-C32-strong"),
    pytest.param(1, 200, 1, 16, 16, 64, "none", True, id="B1-T200-H1-K16-V16-C64-no-decay"),
    pytest.param(1, 130, 1, 64, 64, 128, "mild", False, id="B1-T130-H1-K64-V64-C128"),
]


@pytest.mark.slow
@pytest.mark.parametrize("B,T,H,K,V,C,decay,initial_state", SWEEP)
def test_triton_matches_reference_sweep(B, T, H, K, V, C, decay, initial_state):
    check_against_reference(B, T, H, K, V, C, decay, initial_state)


def test_triton_half_precision_inputs_forward():
    q, k, v, g, h0 = make_inputs(1, 40, 2, 32, 32, dtype=torch.float64)
    q16, k16, v16 = (t.half() for t in (q, k, v))
    o_ref, s_ref = naive_recurrent_gla(q16.double(), k16.double(), v16.double(), g, initial_state=h0,
                                       output_final_state=True)
    o, s = chunk_gla(*(t.to(DEVICE) for t in (q16, k16, v16, g.float())), initial_state=h0.float().to(DEVICE),
                     output_final_state=True, chunk_size=16, backend="triton")
    assert o.dtype == torch.float16 and s.dtype == torch.float32
    assert_rel_close(o_ref, o.cpu(), 2e-3, "o (fp16 output rounding)")
    assert_rel_close(s_ref, s.cpu(), 1e-5, "final_state")


def test_triton_split_sequence_equals_one_call():
    q, k, v, g, h0 = (t.to(DEVICE) for t in make_inputs(1, 50, 2, 16, 16))
    o_full, s_full = chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=16,
                               backend="triton")
    o_a, s_a = chunk_gla(q[:, :21], k[:, :21], v[:, :21], g[:, :21], initial_state=h0,
                         output_final_state=True, chunk_size=16, backend="triton")
    o_b, s_b = chunk_gla(q[:, 21:], k[:, 21:], v[:, 21:], g[:, 21:], initial_state=s_a,
                         output_final_state=True, chunk_size=16, backend="triton")
    assert_rel_close(o_full.cpu(), torch.cat([o_a, o_b], dim=1).cpu(), 1e-6, "o")
    assert_rel_close(s_full.cpu(), s_b.cpu(), 1e-6, "final_state")


@pytest.mark.parametrize("chunk_size,message", [pytest.param(8, ">= 16", id="C8"),
                                                pytest.param(48, "power of two", id="C48")])
def test_triton_rejects_bad_chunk_size(chunk_size, message):
    q, k, v, g = (t.to(DEVICE) for t in make_inputs(1, 4, 1, 16, 16, initial_state=False)[:4])
    with pytest.raises(ValueError, match=message):
        chunk_gla(q, k, v, g, chunk_size=chunk_size, backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("fla") is None,
                    reason="cross-check against flash-linear-attention needs CUDA and the fla package")
def test_matches_flash_linear_attention():
    from fla.ops.gla import chunk_gla as fla_chunk_gla

    q, k, v, g, h0 = (t.cuda() for t in make_inputs(2, 300, 4, 64, 64))
    o_fla, s_fla = fla_chunk_gla(q, k, v, g, scale=64**-0.5, initial_state=h0, output_final_state=True)
    o, s = chunk_gla(q, k, v, g, scale=64**-0.5, initial_state=h0, output_final_state=True)
    assert_rel_close(o_fla.float(), o, 1e-3, "o vs fla")
    assert_rel_close(s_fla.float(), s, 1e-3, "final_state vs fla")
