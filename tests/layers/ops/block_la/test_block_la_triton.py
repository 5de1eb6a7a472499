"""Triton kernels of block-causal linear attention against the float64 reference loop.

On a CPU these run under the Triton interpreter (TRITON_INTERPRET=1, set in tests/conftest.py), so
the default cases are small; the broader sweep is marked ``slow``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layers.ops.block_la import chunk_block_la, naive_block_la
from tests.numerics import assert_rel_close

pytest.importorskip("triton", reason="Triton is a Linux-only dependency (pyproject.toml)")
from layers.ops.block_la.triton import triton_block_la  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# dg comes from q*dq - k*dk summed over later blocks (see triton.py): under strong decay the true dg
# is small next to those terms, so float32 round-off of dq, dk shows up relatively larger there.
TOL = {"o": 2e-5, "final_state": 2e-5, "q": 2e-5, "k": 2e-5, "v": 2e-5, "initial_state": 2e-5, "g": 5e-4}


def make_inputs(B, T, H, K, V, block_size, decay, with_state=True):
    q = torch.randn(B, T, H, K, dtype=torch.float64)
    k = torch.randn(B, T, H, K, dtype=torch.float64) / math.sqrt(K)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    nb = math.ceil(T / block_size)
    g = None if decay is None else -decay * torch.rand(B, nb, H, K, dtype=torch.float64)
    s0 = torch.randn(B, H, K, V, dtype=torch.float64) if with_state else None
    return {"q": q, "k": k, "v": v, "g": g, "initial_state": s0}


def forward_backward(fn, inputs, block_size, inclusive, dtype, device):
    """Outputs and gradients of ``sum(o * do) + sum(final_state * dS)`` with respect to every input."""
    leaves = {n: None if x is None else x.to(device, dtype).requires_grad_() for n, x in inputs.items()}
    o, s = fn(
        leaves["q"],
        leaves["k"],
        leaves["v"],
        leaves["g"],
        block_size,
        0.5,
        inclusive,
        leaves["initial_state"],
        True,
    )
    gen = torch.Generator().manual_seed(1)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(device)
    ds = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(device)
    loss = (o.double() * do).sum() + (s.double() * ds).sum()
    names = [n for n, x in leaves.items() if x is not None]
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return {"o": o, "final_state": s, **dict(zip(names, grads, strict=True))}


def check_against_reference(B, T, H, K, V, block_size, decay, inclusive, with_state=True):
    inputs = make_inputs(B, T, H, K, V, block_size, decay, with_state)
    ref = forward_backward(naive_block_la, inputs, block_size, inclusive, torch.float64, "cpu")
    out = forward_backward(triton_block_la, inputs, block_size, inclusive, torch.float32, DEVICE)
    assert out["o"].dtype == torch.float32 and out["final_state"].dtype == torch.float32
    for name, r in ref.items():
        assert_rel_close(r, out[name].cpu(), TOL[name], name)


MODES = [pytest.param(False, id="strict"), pytest.param(True, id="inclusive")]


@pytest.mark.parametrize("inclusive", MODES)
@pytest.mark.parametrize(
    "B,T,H,K,V,block_size,decay",
    [
        pytest.param(2, 63, 2, 24, 20, 6, 1.0, id="B2-T63-H2-K24-V20-bs6-decay1"),  # 2 super-chunks
        pytest.param(1, 40, 1, 16, 16, 1, 20.0, id="B1-T40-K16-bs1-decay20"),
        pytest.param(1, 75, 1, 60, 16, 32, None, id="B1-T75-K60-bs32-no-decay"),  # last one partial
        pytest.param(1, 1, 1, 4, 4, 5, 20.0, id="B1-T1-K4-bs5-decay20"),
    ],
)
def test_triton_matches_naive(B, T, H, K, V, block_size, decay, inclusive):
    check_against_reference(B, T, H, K, V, block_size, decay, inclusive)


def test_triton_without_initial_state_and_multi_tile_blocks():
    """Blocks longer than one token tile (bs100 > 64 rows) and value dims split over two programs."""
    check_against_reference(1, 150, 1, 16, 80, 100, 1.0, inclusive=True, with_state=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_triton_half_inputs(dtype):
    inputs = make_inputs(1, 48, 2, 16, 16, 16, 1.0)
    q, k, v = (inputs[n].to(DEVICE, dtype) for n in "qkv")
    g, s0 = inputs["g"].float().to(DEVICE), inputs["initial_state"].float().to(DEVICE)
    o, s = triton_block_la(q, k, v, g, 16, 1.0, False, s0, True)
    assert o.dtype == dtype and s.dtype == torch.float32
    ref_o, ref_s = naive_block_la(
        q.cpu().double(),
        k.cpu().double(),
        v.cpu().double(),
        g.cpu().double(),
        16,
        1.0,
        False,
        s0.cpu().double(),
        True,
    )
    assert_rel_close(ref_o, o.cpu(), 1e-2 if dtype == torch.bfloat16 else 2e-3, "o")
    assert_rel_close(ref_s, s.cpu(), 1e-5, "final_state")


def test_triton_split_sequence_equals_one_call():
    x = {
        n: None if t is None else t.float().to(DEVICE)
        for n, t in make_inputs(1, 48, 1, 16, 16, 12, 1.0).items()
    }
    q, k, v, g, s0 = x["q"], x["k"], x["v"], x["g"], x["initial_state"]
    o_full, s_full = triton_block_la(q, k, v, g, 12, 1.0, False, s0, True)
    o1, s1 = triton_block_la(q[:, :24], k[:, :24], v[:, :24], g[:, :2], 12, 1.0, False, s0, True)
    o2, s2 = triton_block_la(q[:, 24:], k[:, 24:], v[:, 24:], g[:, 2:], 12, 1.0, False, s1, True)
    assert_rel_close(o_full.cpu(), torch.cat([o1, o2], 1).cpu(), 1e-6, "o")
    assert_rel_close(s_full.cpu(), s2.cpu(), 1e-6, "final_state")


def test_chunk_dispatches_to_triton():
    x = {
        n: None if t is None else t.float().to(DEVICE)
        for n, t in make_inputs(1, 20, 1, 16, 16, 4, 1.0).items()
    }
    args = (x["q"], x["k"], x["v"], x["g"], 4, 1.0, True, x["initial_state"], True)
    o_t, s_t = triton_block_la(*args)
    o_c, s_c = chunk_block_la(*args, backend="triton")
    assert torch.equal(o_t, o_c) and torch.equal(s_t, s_c)


def test_triton_rejects_float64_and_plain_cpu(monkeypatch):
    x = make_inputs(1, 8, 1, 4, 4, 4, 1.0)
    with pytest.raises(ValueError, match="float64"):
        triton_block_la(x["q"], x["k"], x["v"], x["g"], 4)
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            triton_block_la(x["q"].float(), x["k"].float(), x["v"].float(), x["g"].float(), 4)


def test_triton_rejects_bad_block_size():
    x = make_inputs(1, 8, 1, 4, 4, 4, 1.0)
    with pytest.raises(ValueError, match="block_size"):
        triton_block_la(x["q"].float(), x["k"].float(), x["v"].float(), None, 0)


@pytest.mark.slow
@pytest.mark.parametrize("inclusive", MODES)
@pytest.mark.parametrize("decay", [pytest.param(None, id="no-decay"), pytest.param(20.0, id="decay20")])
@pytest.mark.parametrize(
    "B,T,H,K,V,block_size",
    [
        pytest.param(2, 200, 2, 24, 16, 3, id="B2-T200-H2-K24-bs3"),
        pytest.param(1, 200, 1, 60, 24, 64, id="B1-T200-K60-V24-bs64"),
        pytest.param(1, 600, 2, 32, 32, 256, id="B1-T600-H2-K32-bs256"),
        pytest.param(1, 130, 1, 128, 64, 65, id="B1-T130-K128-V64-bs65"),
        pytest.param(1, 75, 1, 16, 16, 200, id="B1-T75-bs200-one-block"),
    ],
)
def test_triton_matches_naive_sweep(B, T, H, K, V, block_size, decay, inclusive):
    check_against_reference(B, T, H, K, V, block_size, decay, inclusive)


GPU_COMPILE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import layers.ops.block_la.triton as m

POINTERS = {"a", "b", "g", "out", "x", "k", "v", "h", "q", "do", "dh", "dk", "dv", "gsc", "h0", "ht"}
SCALARS = {"T": "i32", "NB": "i32", "NC": "i32", "scale": "fp32"}

def compile_for_sm90(kernel, consts):
    kinds = {n: "*fp32" if n in POINTERS else SCALARS.get(n) for n in kernel.arg_names}
    sig = {n: "constexpr" if n in consts else kinds[n] for n in kernel.arg_names}
    triton.compile(ASTSource(kernel, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32))

common = dict(H=2, K=64, V=64, BK=64, BV=64, USE_G=True)
for inclusive in (False, True):
    for nps, L, ns, bt in ((1, 256, 4, 64), (16, 4, 1, 16)):
        w = dict(common, L=L, NS=ns, NPS=nps, BT=bt, INCLUSIVE=inclusive, PRECISION="ieee")
        compile_for_sm90(m._chunk_contrib_kernel, dict(w, REVERSE=inclusive))
        compile_for_sm90(m._chunk_read_kernel, dict(w, GRAD=inclusive))
        compile_for_sm90(m._chunk_dkdv_kernel, w)
    compile_for_sm90(m._chunk_scan_kernel, dict(common, USE_H0=True, REVERSE=inclusive))
print("compiled")
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_gpu(tmp_path):
    """The GPU compile path (not the interpreter) accepts every kernel variant: PTX + cubin for sm_90."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    root = Path(__file__).resolve().parents[4]
    res = subprocess.run(
        [sys.executable, "-c", GPU_COMPILE_SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "compiled" in res.stdout
