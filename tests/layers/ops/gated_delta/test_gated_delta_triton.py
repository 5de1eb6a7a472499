"""Gated delta rule Triton kernels (forward and hand-written backward) against the float64 token loop.

On a CPU these run under the Triton interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py),
which is slow, so the default suite takes a handful of small cases and the broader sweep is marked
``slow``. On CUDA the same tests run the compiled kernels (IEEE fp32 dots: tf32 off), and optional
tests cross-check against flash-linear-attention's KDA and gated-delta chunk kernels when installed.

Tolerances (relative RMS, fp32 kernels vs the float64 loop): 2e-6 per tensor; dg 1e-5 for mild
decay; under strong decay (g about -20 per token) dg is bounded by the rounding of the in-chunk
cumulative log-decays, about eps32 * 20 * C (as for GLA: layers/ops/gla/README.md).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layers.ops.gated_delta import chunk_gated_delta, naive_recurrent_gated_delta
from tests.layers.ops.gated_delta.test_gated_delta_ops import NAMES, make_inputs, run_with_grads

# the device, the skip without CUDA or the interpreter, and the IEEE-dots fixture of the GLA kernel tests
from tests.layers.ops.gla.test_gla_triton import DEVICE, _ieee_dots, pytestmark  # noqa: F401
from tests.numerics import assert_rel_close


def check_against_reference(B, T, H, K, V, C, decay="mild", beta="uniform", per_head=False, seed=0):
    inputs = make_inputs(B, T, H, K, V, decay=decay, seed=seed, beta=beta)
    if per_head:  # one log-decay per token and head: g [B, T, H]
        inputs[3] = inputs[3][..., 0].contiguous()
    ref = run_with_grads(naive_recurrent_gated_delta, *inputs)
    got = run_with_grads(chunk_gated_delta, *[x.float().to(DEVICE) for x in inputs], chunk_size=C,
                         backend="triton")
    got = [x.cpu() for x in got]
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    dg_tol = 2 * 2.0**-24 * 20 * C if decay == "strong" else 1e-5
    for name, r, x in zip(NAMES, ref, got, strict=True):
        assert_rel_close(r, x, dg_tol if name == "dg" else 2e-6, name)


SMALL = [  # B, T, H, K, V, chunk_size, decay, beta, per_head
    pytest.param(1, 1, 1, 16, 16, 16, "mild", "uniform", False, id="B1-T1-H1-K16-V16-C16"),
    pytest.param(2, 37, 2, 24, 40, 32, "mild", "uniform", False, id="B2-T37-H2-K24-V40-C32"),  # 2 value tiles
    pytest.param(1, 75, 2, 24, 20, 32, "strong", "uniform", False, id="B1-T75-H2-K24-V20-C32-strong"),
    pytest.param(1, 40, 1, 16, 16, 16, "none", "uniform", False, id="B1-T40-H1-K16-V16-C16-no-decay"),
    pytest.param(1, 33, 2, 16, 16, 16, "mild", "zero-one", False, id="B1-T33-H2-K16-V16-C16-beta-0-and-1"),
    pytest.param(1, 200, 1, 16, 16, 64, "none", "one", False, id="B1-T200-H1-K16-V16-C64-no-decay-beta-1"),
    pytest.param(1, 50, 2, 16, 24, 16, "mild", "uniform", True, id="B1-T50-H2-K16-V24-C16-per-head"),
]


@pytest.mark.parametrize("B,T,H,K,V,C,decay,beta,per_head", SMALL)
def test_triton_matches_reference(B, T, H, K, V, C, decay, beta, per_head):
    check_against_reference(B, T, H, K, V, C, decay, beta, per_head)


SWEEP = [
    pytest.param(2, 63, 2, 24, 32, 64, "mild", "uniform", False, id="B2-T63-H2-K24-V32-C64"),
    pytest.param(1, 200, 2, 32, 16, 64, "mild", "uniform", False, id="B1-T200-H2-K32-V16-C64"),
    pytest.param(1, 200, 1, 24, 24, 32, "strong", "uniform", False, id="B1-T200-H1-K24-V24-C32-strong"),
    pytest.param(1, 130, 1, 64, 64, 64, "mild", "zero-one", False, id="B1-T130-H1-K64-V64-C64-beta-0-and-1"),
    pytest.param(1, 100, 2, 60, 20, 32, "strong", "uniform", True, id="B1-T100-H2-K60-V20-C32-head-strong"),
    pytest.param(1, 64, 1, 128, 128, 64, "mild", "uniform", False, id="B1-T64-H1-K128-V128-C64"),
]


@pytest.mark.slow
@pytest.mark.parametrize("B,T,H,K,V,C,decay,beta,per_head", SWEEP)
def test_triton_matches_reference_sweep(B, T, H, K, V, C, decay, beta, per_head):
    check_against_reference(B, T, H, K, V, C, decay, beta, per_head)


def test_triton_zero_beta_is_decay_only():
    # beta = 0 writes nothing: the output reads the decayed initial state, and the gradients of k and
    # v are exactly zero (v enters only through the write).
    q, k, v, g, _, h0 = (x.float().to(DEVICE) for x in make_inputs(1, 21, 1, 16, 16))
    beta = torch.zeros(1, 21, 1, device=DEVICE)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g)]
    o, s = chunk_gated_delta(*leaves, beta, initial_state=h0, output_final_state=True, chunk_size=16,
                             backend="triton")
    decay = torch.exp(g.cumsum(1))  # [1, T, 1, K]
    o_ref = torch.einsum("bthk,bhkv->bthv", q * decay, h0) * 16**-0.5
    assert_rel_close(o_ref.cpu(), o.detach().cpu(), 1e-6, "o")
    assert_rel_close((decay[:, -1, :, :, None] * h0).cpu(), s.detach().cpu(), 1e-6, "final_state")
    (o.sum() + s.sum()).backward()
    assert torch.count_nonzero(leaves[1].grad) == 0 and torch.count_nonzero(leaves[2].grad) == 0


def test_triton_half_precision_inputs_forward():
    q, k, v, g, beta, h0 = make_inputs(1, 40, 2, 32, 32)
    q16, k16, v16 = (t.half() for t in (q, k, v))
    o_ref, s_ref = naive_recurrent_gated_delta(q16.double(), k16.double(), v16.double(), g, beta,
                                               initial_state=h0, output_final_state=True)
    o, s = chunk_gated_delta(*(t.to(DEVICE) for t in (q16, k16, v16, g.float(), beta.float())),
                             initial_state=h0.float().to(DEVICE), output_final_state=True, chunk_size=16,
                             backend="triton")
    assert o.dtype == torch.float16 and s.dtype == torch.float32
    assert_rel_close(o_ref, o.cpu(), 2e-3, "o (fp16 output rounding)")
    assert_rel_close(s_ref, s.cpu(), 1e-5, "final_state")


def test_triton_split_sequence_equals_one_call():
    q, k, v, g, beta, h0 = (t.float().to(DEVICE) for t in make_inputs(1, 50, 2, 16, 16))
    kw = dict(output_final_state=True, chunk_size=16, backend="triton")
    o_full, s_full = chunk_gated_delta(q, k, v, g, beta, initial_state=h0, **kw)
    first, second = ([x[:, :21] for x in (q, k, v, g, beta)], [x[:, 21:] for x in (q, k, v, g, beta)])
    o_a, s_a = chunk_gated_delta(*first, initial_state=h0, **kw)
    o_b, s_b = chunk_gated_delta(*second, initial_state=s_a, **kw)
    assert_rel_close(o_full.cpu(), torch.cat([o_a, o_b], dim=1).cpu(), 1e-6, "o")
    assert_rel_close(s_full.cpu(), s_b.cpu(), 1e-6, "final_state")


def test_dispatch_picks_the_backend():
    q, k, v, g, beta, h0 = (t.float().to(DEVICE).requires_grad_() for t in make_inputs(1, 20, 1, 16, 16))
    o_auto, _ = chunk_gated_delta(q, k, v, g, beta, initial_state=h0, chunk_size=16)
    o_triton, _ = chunk_gated_delta(q, k, v, g, beta, initial_state=h0, chunk_size=16, backend="triton")
    o_torch, _ = chunk_gated_delta(q, k, v, g, beta, initial_state=h0, chunk_size=16, backend="torch")
    auto_name = "Triton" if DEVICE == "cuda" else "Torch"
    assert type(o_auto.grad_fn).__name__.startswith(auto_name + "GatedDeltaFunction")
    assert type(o_triton.grad_fn).__name__.startswith("TritonGatedDeltaFunction")
    assert type(o_torch.grad_fn).__name__.startswith("TorchGatedDeltaFunction")
    assert_rel_close(o_torch.detach().cpu(), o_triton.detach().cpu(), 2e-6, "o (triton vs torch)")
    with pytest.raises(ValueError, match="backend must be None or one of"):
        chunk_gated_delta(q, k, v, g, beta, backend="cuda")


@pytest.mark.parametrize("chunk_size,K,message", [
    pytest.param(8, 16, "16 <= chunk_size <= 64", id="C8"),
    pytest.param(128, 16, "16 <= chunk_size <= 64", id="C128"),
    pytest.param(48, 16, "power of two", id="C48"),
    pytest.param(16, 160, "K, V <= 128", id="K160"),
])
def test_triton_rejects_unsupported_sizes(chunk_size, K, message):
    q, k, v, g, beta = (t.float().to(DEVICE) for t in make_inputs(1, 4, 1, K, 16)[:5])
    with pytest.raises(ValueError, match=message):
        chunk_gated_delta(q, k, v, g, beta, chunk_size=chunk_size, backend="triton")


def _fla_op(module: str):
    if not torch.cuda.is_available():
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


@pytest.mark.gpu
@pytest.mark.skipif(_fla_op("fla.ops.kda") is None,
                    reason="the cross-check against fla's chunk_kda needs CUDA and flash-linear-attention")
def test_matches_flash_linear_attention_kda():
    from fla.ops.kda import chunk_kda

    q, k, v, g, beta, h0 = (t.float().cuda() for t in make_inputs(2, 300, 4, 64, 64))
    o_fla, s_fla = chunk_kda(q=q, k=k, v=v, g=g, beta=beta, scale=64**-0.5, initial_state=h0,
                             output_final_state=True)
    o, s = chunk_gated_delta(q, k, v, g, beta, scale=64**-0.5, initial_state=h0, output_final_state=True)
    assert_rel_close(o_fla.float(), o, 1e-3, "o vs fla chunk_kda")
    assert_rel_close(s_fla.float(), s, 1e-3, "final_state vs fla chunk_kda")


@pytest.mark.gpu
@pytest.mark.skipif(_fla_op("fla.ops.gated_delta_rule") is None,
                    reason="the cross-check against fla's chunk_gated_delta_rule needs CUDA and fla")
def test_matches_flash_linear_attention_gated_delta_rule():
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    q, k, v, g, beta, h0 = (t.float().cuda() for t in make_inputs(2, 300, 4, 64, 64))
    g = g[..., 0].contiguous()  # per head
    o_fla, s_fla = chunk_gated_delta_rule(q=q, k=k, v=v, g=g, beta=beta, scale=64**-0.5, initial_state=h0,
                                          output_final_state=True)
    o, s = chunk_gated_delta(q, k, v, g, beta, scale=64**-0.5, initial_state=h0, output_final_state=True)
    assert_rel_close(o_fla.float(), o, 1e-3, "o vs fla chunk_gated_delta_rule")
    assert_rel_close(s_fla.float(), s, 1e-3, "final_state vs fla chunk_gated_delta_rule")


def test_layer_runs_the_kernels_and_matches_the_torch_path():
    # GLAMemory (delta rule, the default memory) with backend="triton": same outputs, final state and
    # input gradient as backend="torch", through the streaming cache (two calls).
    from tests.layers.test_gla_layer import make_layer

    layer = make_layer(chunk_size=16).to(DEVICE)
    x = torch.randn(1, 3, 11, 48, device=DEVICE)
    results = []
    for backend in ("torch", "triton"):
        layer.backend = backend
        xb = x.clone().requires_grad_()
        y1, cache = layer(xb[:, :2])
        y2, cache = layer(xb[:, 2:], cache)
        y = torch.cat([y1, y2], dim=1)
        (y.pow(2).mean() + cache.state.pow(2).mean()).backward()
        results.append((y.detach().cpu(), cache.state.cpu(), xb.grad.cpu()))
    for name, r, got in zip(("y", "state", "dx"), results[0], results[1], strict=True):
        assert_rel_close(r, got, 2e-6, name)


def _bundled_ptxas() -> bool:
    import triton

    return (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


def _compile_check(*args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[4]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "tools.triton_compile_check", *args], capture_output=True,
                          text=True, env=env, cwd=root, timeout=900)


@pytest.mark.skipif(not _bundled_ptxas(), reason="needs the ptxas that ships with Triton's NVIDIA backend")
def test_kernels_compile_for_sm90_without_a_gpu():
    # The interpreter does not run Triton's compiler: compile every kernel for sm_90 (H100 / H200),
    # down to a cubin, at a small size, and check its shared memory (tools/triton_compile_check.py).
    res = _compile_check("--head-dim", "32", "--chunk-size", "32", "--arch", "90")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("ok ") == 7, res.stdout


@pytest.mark.slow
@pytest.mark.skipif(not _bundled_ptxas(), reason="needs the ptxas that ships with Triton's NVIDIA backend")
def test_kernels_compile_for_sm90_at_the_largest_sizes():
    res = _compile_check("--head-dim", "64", "128", "--chunk-size", "64", "--arch", "90")
    assert res.returncode == 0, res.stdout + res.stderr
