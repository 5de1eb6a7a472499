"""Channel-wise gated linear attention: the chunked torch form (the CPU path) and the dispatcher.

Same function as ``naive_recurrent_gla`` (see ``naive.py``), computed chunk by chunk with matmuls and
with every exponent <= 0, so that decays down to ``g = -20`` per token stay finite (derivation in
README.md beside this file):

* The sequence is cut into chunks of ``C`` tokens (zero padding at the end: ``k = v = 0`` and
  ``g = 0`` leave the state unchanged). ``G`` is the cumulative log-decay inside each chunk.
* Inter-chunk: a scan over chunks carries the state ``S_n`` entering chunk ``n``:
  ``S_{n+1} = exp(G_last) S_n + (k * exp(G_last - G))^T v``; chunk ``n`` reads it with
  ``(q * exp(G)) S_n``.
* Intra-chunk: causal attention inside the chunk by recursive halving. For each pair of halves
  (at every level down to single tokens) the second half reads the first through the reference
  point ``R = G`` at the first token of the second half, so both factors ``exp(G_t - R)`` and
  ``exp(R - G_s)`` are <= 1; every matmul is exact-stable, no element-wise C x C x K tensor is
  formed. (The Triton kernels use 16-token sub-chunks with an exact element-wise diagonal instead:
  two different decompositions of the same sum, tested against the same reference.)

Gradients come from autograd. ``chunk_gla(backend=None)`` runs the Triton kernels on CUDA tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layers.ops.gla.naive import check_chunk_size, check_gla_inputs, compute_dtype_for, resolve_scale

_BACKENDS = ("torch", "triton")


def resolve_backend(op: str, backend: str | None, q: torch.Tensor) -> str:
    """``backend`` of a chunked op: None means Triton for CUDA tensors and torch otherwise; else one of
    ``"torch"``, ``"triton"`` (ValueError naming ``op`` for anything else)."""
    if backend is None:
        return "triton" if q.is_cuda else "torch"
    if backend not in _BACKENDS:
        raise ValueError(f"{op}: backend must be None or one of {_BACKENDS}, got {backend!r}")
    return backend


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention, chunked form (same arguments and result as ``naive_recurrent_gla``).

    Args:
        q: queries [B, T, H, K].
        k: keys [B, T, H, K].
        v: values [B, T, H, V].
        g: per-token, per-key-channel log-decay [B, T, H, K], all <= 0.
        scale: factor on the output; None means ``K ** -0.5``.
        initial_state: state before the first token [B, H, K, V]; None means zeros.
        output_final_state: also return the state after the last token.
        chunk_size: tokens per chunk, a power of two (any T works: the last chunk is padded). The
            Triton backend needs at least 16.
        backend: None (Triton on CUDA tensors, torch otherwise), ``"torch"`` or ``"triton"`` (CUDA,
            or the Triton interpreter when ``TRITON_INTERPRET=1`` was set before import).

    Returns:
        ``(o [B, T, H, V] in q.dtype, final_state [B, H, K, V] float32 (float64 for float64 inputs)
        or None)``. Gradients flow to q, k, v, g and initial_state.

    Example:
        >>> q = k = torch.randn(2, 300, 4, 64); v = torch.randn(2, 300, 4, 64)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(2, 300, 4, 64)) / 16
        >>> o, s = chunk_gla(q, k, v, g, output_final_state=True)
        >>> o.shape, s.dtype
        (torch.Size([2, 300, 4, 64]), torch.float32)
    """
    check_gla_inputs(q, k, v, g, initial_state, check_decay_values=not q.is_cuda)
    check_chunk_size(chunk_size)
    scale = resolve_scale(scale, q.shape[-1])
    if resolve_backend("gla", backend, q) == "triton":
        from layers.ops.gla.triton import triton_gla

        return triton_gla(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    return torch_chunk_gla(q, k, v, g, scale, initial_state, output_final_state, chunk_size)


def torch_chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch chunked form (inputs already checked, scale resolved); see the module docstring."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    cdt = compute_dtype_for(q.dtype)
    state = q.new_zeros(B, H, K, V, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    if T == 0:
        return q.new_zeros(B, 0, H, V), (state if output_final_state else None)
    C = min(chunk_size, 1 << (T - 1).bit_length())  # no chunk longer than the padded sequence
    N = math.ceil(T / C)

    def to_chunks(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, H, N, C, D], zero padded
        x = F.pad(x.to(cdt), (0, 0, 0, 0, 0, N * C - T))
        return x.view(B, N, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4)

    qc, kc, vc, gc = to_chunks(q), to_chunks(k), to_chunks(v), to_chunks(g)
    G = gc.cumsum(dim=3)  # [B, H, N, C, K] log-decay from the chunk start through token t
    G_last = G[:, :, :, -1]  # [B, H, N, K]
    # Log-decay from after token t to the chunk end, as a sum over the later tokens only (not as
    # G_last - G): its gradient then never pairs +x and -x of size O(1) (the last token's zero
    # exponent), which would swamp dg under strong decay.
    to_end = F.pad(gc.flip(3).cumsum(3).flip(3)[:, :, :, 1:], (0, 0, 0, 1))

    # Inter-chunk: the state entering every chunk, by a scan over chunks.
    k_to_end = kc * torch.exp(to_end)
    d_state = k_to_end.transpose(-1, -2) @ vc  # [B, H, N, K, V]
    decay_chunk = torch.exp(G_last).unsqueeze(-1)  # [B, H, N, K, 1]
    states_in = []
    for decay_n, d_state_n in zip(decay_chunk.unbind(2), d_state.unbind(2), strict=True):
        states_in.append(state)
        state = decay_n * state + d_state_n
    s_in = torch.stack(states_in, dim=2)  # [B, H, N, K, V]
    o = (qc * torch.exp(G)) @ s_in
    o = o + intra_chunk_output(qc, kc, vc, G)
    o = (scale * o).permute(0, 2, 3, 1, 4).reshape(B, N * C, H, V)[:, :T]
    return o.to(q.dtype), (state if output_final_state else None)


def intra_chunk_output(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Causal decayed attention inside each chunk, by recursive halving (every exponent <= 0).

    Computes ``o_t = sum_{s <= t in the chunk} (q_t * exp(G_t - G_s)) . k_s  v_s``. The chunk is split
    in halves, recursively down to single tokens; for each pair of halves the queries of the second
    half read the keys of the first through the reference point ``R = G`` at the first token of the
    second half: ``(q_t * exp(G_t - R)) . (k_s * exp(R - G_s))``, and both factors are <= 1 because
    ``G`` is non-increasing. The diagonal (s = t) has no decay. Every pair (s < t) belongs to exactly
    one level: the one where s and t first fall into different halves.

    Args:
        qc, kc: [B, H, N, C, K] chunked queries and keys; vc: [B, H, N, C, V]; C a power of two.
        G: [B, H, N, C, K] cumulative log-decay inside each chunk (non-increasing along C).

    Returns:
        [B, H, N, C, V] (without the output scale).
    """
    B, H, N, C, K = qc.shape
    V = vc.shape[-1]
    o = (qc * kc).sum(-1, keepdim=True) * vc  # s = t
    h = C // 2
    while h >= 1:
        nb = C // (2 * h)
        q_h, k_h, G_h = (x.view(B, H, N, nb, 2, h, K) for x in (qc, kc, G))
        v_first = vc.view(B, H, N, nb, 2, h, V)[:, :, :, :, 0]
        G_second = G_h[:, :, :, :, 1]
        ref = G_second[:, :, :, :, :1]  # [B, H, N, nb, 1, K]
        q_second = q_h[:, :, :, :, 1] * torch.exp(G_second - ref)
        k_first = k_h[:, :, :, :, 0] * torch.exp(ref - G_h[:, :, :, :, 0])
        part = (q_second @ k_first.transpose(-1, -2)) @ v_first  # [B, H, N, nb, h, V]
        o = o + torch.stack((torch.zeros_like(part), part), dim=4).view(B, H, N, C, V)
        h //= 2
    return o

