"""layers.ops.ttt: sequential TTT vs an autograd reference loop, parallel form vs sequential."""

from __future__ import annotations

import pytest
import torch

from layers.ops.ttt import (
    FastWeights,
    inner_loss,
    inner_loss_updates,
    newton_schulz,
    ttt_parallel,
    ttt_sequential,
)
from layers.ops.ttt.swiglu import sequence_features
from tests.numerics import assert_rel_close

F64 = torch.float64

SHAPES = [
    pytest.param(1, 1, 1, 8, 16, 8, 4, id="B1-T1-H1-K8-Dh16-C4"),
    pytest.param(2, 63, 2, 24, 20, 12, 16, id="B2-T63-H2-K24-Dh20-V12-C16"),
    pytest.param(1, 75, 3, 12, 36, 16, 10, id="B1-T75-H3-K12-Dh36-V16-C10"),
    pytest.param(2, 40, 2, 16, 16, 16, 40, id="B2-T40-H2-K16-C40-one-chunk"),
    pytest.param(1, 50, 1, 8, 8, 8, 1, id="B1-T50-H1-K8-C1-per-token"),
]


def make_inputs(B, T, H, K, Dh, V, dtype=F64, eta_scale=0.1, requires_grad=False):
    """Random q, k, v, eta >= 0 and fast weights scaled like the layer's (unit keys)."""
    q = torch.nn.functional.normalize(torch.randn(B, T, H, K, dtype=dtype), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, V, dtype=dtype)
    eta = torch.rand(B, T, H, dtype=dtype) * eta_scale
    w0 = torch.randn(B, H, K, Dh, dtype=dtype)
    w2 = torch.randn(B, H, K, Dh, dtype=dtype)
    w1 = torch.randn(B, H, Dh, V, dtype=dtype) / Dh**0.5
    tensors = [q, k, v, eta, w0, w1, w2]
    if requires_grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


def newton_schulz_by_svd(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Independent reference: Newton-Schulz acts on singular values only, U p(S / ||G||_F) V^T."""
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    x = s / (torch.linalg.matrix_norm(g).unsqueeze(-1) + 1e-7)
    for _ in range(steps):
        x = 3.4445 * x - 4.7750 * x**3 + 2.0315 * x**5
    return u @ torch.diag_embed(x) @ vh


def autograd_reference(q, k, v, eta, w0, w1, w2, C, inclusive, update_hidden, weight_norm, muon, mom):
    """TTT by autograd: per chunk, W -= step(dL/dW) with the optimizer written out independently."""
    ws = [w.clone() for w in (w0, w1, w2)]
    norms = [w.norm(dim=-2, keepdim=True) for w in ws]
    bufs = [torch.zeros_like(w) for w in ws]
    qh, kh, vh, eh = (t.transpose(1, 2) for t in (q, k, v, eta))
    read = lambda x, ws: (torch.nn.functional.silu(x @ ws[0]) * (x @ ws[2])) @ ws[1]
    outs = []
    for s in range(0, q.shape[1], C):
        sl = slice(s, s + C)
        if not inclusive:
            outs.append(read(qh[:, :, sl], ws))
        leaves = [w.detach().requires_grad_(True) for w in ws]
        loss = -(eh[:, :, sl, None] * read(kh[:, :, sl], leaves) * vh[:, :, sl]).sum()
        grads = torch.autograd.grad(loss, leaves)
        for i in (0, 1, 2) if update_hidden else (1,):
            bufs[i] = mom * bufs[i] - grads[i]
            step = newton_schulz_by_svd(bufs[i], muon) if muon else bufs[i]
            ws[i] = ws[i] + step
            if weight_norm:
                ws[i] = ws[i] / ws[i].norm(dim=-2, keepdim=True) * norms[i]
        if inclusive:
            outs.append(read(qh[:, :, sl], ws))
    return torch.cat(outs, dim=2).transpose(1, 2), ws


@pytest.mark.parametrize("update_hidden", [False, True], ids=["w1-only", "update-hidden"])
def test_hand_written_update_equals_autograd(update_hidden):
    B, N, H, K, Dh, V = 2, 13, 3, 8, 12, 6
    q, k, v, eta, w0, w1, w2 = make_inputs(B, N, H, K, Dh, V)
    kh, vh, eh = k.transpose(1, 2), v.transpose(1, 2), eta.transpose(1, 2)
    leaves = FastWeights(*(w.clone().requires_grad_(True) for w in (w0, w1, w2)))
    grads = torch.autograd.grad(inner_loss(kh, vh, eh, leaves), (leaves.w0, leaves.w1, leaves.w2))
    u0, u1, u2 = inner_loss_updates(kh, vh, eh, FastWeights(w0, w1, w2), update_hidden)
    assert_rel_close(-grads[1], u1, 1e-13, "u1")
    if update_hidden:
        assert_rel_close(-grads[0], u0, 1e-13, "u0")
        assert_rel_close(-grads[2], u2, 1e-13, "u2")
    else:
        assert u0 is None and u2 is None


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 12, 5), (4, 6, 20)], ids=["square", "tall", "wide"])
def test_newton_schulz_matches_svd_polynomial(shape):
    g = torch.randn(*shape, dtype=F64)
    assert_rel_close(newton_schulz_by_svd(g, 5), newton_schulz(g, 5), 1e-10, "newton_schulz")


OPTIONS = [
    pytest.param(False, False, 0, 0.0, id="plain"),
    pytest.param(True, False, 0, 0.0, id="hidden"),
    pytest.param(True, True, 0, 0.0, id="hidden-wnorm"),
    pytest.param(True, True, 5, 0.0, id="hidden-wnorm-muon5"),
    pytest.param(True, True, 3, 0.6, id="hidden-wnorm-muon3-mom0.6"),
    pytest.param(False, False, 0, 0.8, id="mom0.8"),
]


@pytest.mark.parametrize("inclusive", [False, True], ids=["strict", "inclusive"])
@pytest.mark.parametrize("update_hidden, weight_norm, muon, mom", OPTIONS)
def test_sequential_equals_autograd_loop(update_hidden, weight_norm, muon, mom, inclusive):
    q, k, v, eta, w0, w1, w2 = make_inputs(2, 37, 2, 8, 12, 6)
    o, ws = ttt_sequential(
        q,
        k,
        v,
        eta,
        w0,
        w1,
        w2,
        8,
        inclusive=inclusive,
        update_hidden=update_hidden,
        weight_norm=weight_norm,
        muon_steps=muon,
        momentum=mom,
    )
    o_ref, ws_ref = autograd_reference(
        q, k, v, eta, w0, w1, w2, 8, inclusive, update_hidden, weight_norm, muon, mom
    )
    assert_rel_close(o_ref, o, 1e-10, "o")
    for name, ref, w in zip(("w0", "w1", "w2"), ws_ref, ws, strict=True):
        assert_rel_close(ref, w, 1e-10, name)
    if weight_norm:
        assert_rel_close(w1.norm(dim=-2), ws[1].norm(dim=-2), 1e-12, "w1 column norms")


def random_retention(H, Dh, low=0.75):
    """Per-unit retention in (low, 1], with one exact 1 (no decay) and one strong decay near low."""
    gamma = low + (1 - low) * torch.rand(H, Dh, dtype=F64).clamp_min(1e-3)
    gamma[0, 0] = 1.0
    return gamma


RETENTIONS = [
    pytest.param(None, id="no-retention"),
    pytest.param(0.9, id="retention0.9"),
    pytest.param("per-unit", id="retention-per-unit"),
]


@pytest.mark.parametrize("inclusive", [False, True], ids=["strict", "inclusive"])
@pytest.mark.parametrize("retention", RETENTIONS)
@pytest.mark.parametrize("momentum", [0.0, 0.7], ids=["mom0", "mom0.7"])
@pytest.mark.parametrize("B, T, H, K, Dh, V, C", SHAPES)
def test_parallel_equals_sequential_float64(B, T, H, K, Dh, V, C, momentum, retention, inclusive):
    inputs = make_inputs(B, T, H, K, Dh, V)
    if retention == "per-unit":
        retention = random_retention(H, Dh)
    kw = dict(inclusive=inclusive, momentum=momentum, retention=retention)
    o_seq, (_, w1_seq, _) = ttt_sequential(*inputs, C, **kw)
    o_par, w1_par = ttt_parallel(*inputs, C, **kw)
    assert_rel_close(o_seq, o_par, 1e-12, "o")
    assert_rel_close(w1_seq, w1_par, 1e-12, "w1_final")


def test_retention_closed_form_after_each_chunk():
    """Hand-computed: with a frozen kernel and retention gamma, W_c - w1_0 = sum_j gamma^(c-j+1) U_j."""
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 12, 2, 8, 10, 6)
    gamma = random_retention(2, 10)
    phk = sequence_features(k, w0, w2)
    chunks = (x.unflatten(1, (3, 4)).flatten(0, 1) for x in (phk, eta[..., None] * v))
    U = torch.einsum("bthd,bthv->bhdv", *chunks)  # [3 chunks, H, Dh, V]
    expected = w1.clone()
    for j in range(3):  # three chunks of 4
        expected = w1 + gamma[None, :, :, None] * (expected - w1 + U[j : j + 1])
    _, (_, w1_seq, _) = ttt_sequential(q, k, v, eta, w0, w1, w2, 4, retention=gamma)
    assert_rel_close(expected, w1_seq, 1e-13, "w1 after 3 chunks")
    with_one = ttt_sequential(q, k, v, eta, w0, w1, w2, 4, retention=1.0)[1][1]
    assert_rel_close(ttt_sequential(q, k, v, eta, w0, w1, w2, 4)[1][1], with_one, 1e-15, "retention 1")


def test_retention_bounds_the_fast_weight():
    """Constant updates: without retention W grows linearly; with gamma it saturates at gamma/(1-gamma) U."""
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 4, 1, 8, 8, 4)
    rep = lambda x: x.repeat(1, 400, *([1] * (x.dim() - 2)))  # the same chunk 400 times
    q, k, v, eta = rep(q), rep(k), rep(v), rep(eta)
    _, w_plain = ttt_parallel(q, k, v, eta, w0, w1, w2, 4)
    _, w_kept = ttt_parallel(q, k, v, eta, w0, w1, w2, 4, retention=0.95)
    _, w_one = ttt_parallel(q[:, :4], k[:, :4], v[:, :4], eta[:, :4], w0, w1, w2, 4)
    U = w_one - w1
    assert_rel_close(400 * U, w_plain - w1, 1e-12, "no retention: 400 U")
    assert_rel_close(0.95 * (1 - 0.95**400) / 0.05 * U, w_kept - w1, 1e-12, "retention: geometric sum")


@pytest.mark.parametrize("inclusive", [False, True], ids=["strict", "inclusive"])
@pytest.mark.parametrize("momentum, with_retention", [(0.0, False), (0.5, False), (0.0, True), (0.5, True)],
                         ids=["mom0", "mom0.5", "mom0-retention", "mom0.5-retention"])
def test_parallel_gradients_equal_sequential(momentum, with_retention, inclusive):
    names = ["q", "k", "v", "eta", "w0", "w1", "w2"]
    inputs = make_inputs(2, 29, 2, 8, 12, 6, requires_grad=True)
    leaves = list(inputs)
    retention = None
    if with_retention:
        retention = random_retention(2, 12).requires_grad_(True)
        leaves.append(retention)
        names.append("retention")
    grad_o = torch.randn(2, 29, 2, 6, dtype=F64)
    grad_w = torch.randn(2, 2, 12, 6, dtype=F64)

    def grads(fn):
        o, w1 = fn(*inputs, 8, inclusive=inclusive, momentum=momentum, retention=retention)
        w1 = w1[1] if isinstance(w1, tuple) else w1
        return torch.autograd.grad((o * grad_o).sum() + (w1 * grad_w).sum(), leaves)

    for name, g_seq, g_par in zip(names, grads(ttt_sequential), grads(ttt_parallel), strict=True):
        assert_rel_close(g_seq, g_par, 1e-11, f"grad {name}")


def test_parallel_float32_close_to_float64_sequential():
    inputs = make_inputs(2, 96, 2, 16, 32, 16)
    o_ref, _ = ttt_sequential(*inputs, 32)
    o32, _ = ttt_parallel(*(t.float() for t in inputs), 32)
    assert o32.dtype == torch.float32
    assert_rel_close(o_ref, o32, 1e-5, "o float32")


def test_split_sequence_carries_fast_weights():
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 48, 2, 8, 12, 6)
    o_full, w_full = ttt_sequential(q, k, v, eta, w0, w1, w2, 8, update_hidden=True, muon_steps=2)
    o_a, w_a = ttt_sequential(
        q[:, :24], k[:, :24], v[:, :24], eta[:, :24], w0, w1, w2, 8, update_hidden=True, muon_steps=2
    )
    o_b, w_b = ttt_sequential(
        q[:, 24:], k[:, 24:], v[:, 24:], eta[:, 24:], *w_a, 8, update_hidden=True, muon_steps=2
    )
    # *w_a is (w0, w1, w2): the same argument order as the signature.
    assert_rel_close(o_full, torch.cat([o_a, o_b], dim=1), 1e-13, "o split")
    for name, ref, w in zip(("w0", "w1", "w2"), w_full, w_b, strict=True):
        assert_rel_close(ref, w, 1e-13, name)


def test_float32_inputs_keep_float32_weights_and_output_dtype():
    inputs = [
        t.half() if i < 3 else t.float() for i, t in enumerate(make_inputs(1, 10, 1, 8, 8, 8, torch.float32))
    ]
    o, ws = ttt_sequential(*inputs, 4, update_hidden=True)
    assert o.dtype == torch.float16 and all(w.dtype == torch.float32 for w in ws)


BAD = [
    pytest.param({"chunk_size": 0}, "chunk_size must be >= 1", id="chunk0"),
    pytest.param({"w1": torch.zeros(1, 2, 7, 6)}, "w1 must be", id="w1-hidden-mismatch"),
    pytest.param({"w2": torch.zeros(1, 2, 8, 11)}, "w2 must have the shape of w0", id="w2-mismatch"),
    pytest.param({"eta": torch.zeros(1, 10, 3)}, "eta must be", id="eta-heads"),
    pytest.param({"momentum": 1.0}, "momentum must be in", id="momentum1"),
    pytest.param({"muon_steps": -1}, "muon_steps must be", id="muon-negative"),
    pytest.param({"retention": 0.0}, r"retention must lie in \(0, 1\]", id="retention0"),
    pytest.param({"retention": 1.5}, r"retention must lie in \(0, 1\]", id="retention-above-1"),
    pytest.param({"retention": torch.full((2, 11), 0.9)}, r"retention must be a scalar or \[H, Dh\]",
                 id="retention-shape"),
]


def test_parallel_momentum_at_or_above_retention_raises_clear_error():
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 10, 2, 8, 12, 6, dtype=torch.float32)
    with pytest.raises(ValueError, match="momentum .* must be below every retention value"):
        ttt_parallel(q, k, v, eta, w0, w1, w2, 4, momentum=0.9, retention=0.9)


@pytest.mark.parametrize("override, message", BAD)
def test_bad_input_raises_clear_value_error(override, message):
    q, k, v, eta, w0, w1, w2 = make_inputs(1, 10, 2, 8, 12, 6, dtype=torch.float32)
    args = dict(q=q, k=k, v=v, eta=eta, w0=w0, w1=w1, w2=w2, chunk_size=4)
    args.update(override)
    with pytest.raises(ValueError, match=message):
        ttt_sequential(**args)
    if "muon_steps" not in override:
        with pytest.raises(ValueError, match=message):
            ttt_parallel(**args)
