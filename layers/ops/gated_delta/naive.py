"""Gated delta rule with per-channel decay: the reference token loop and its input checks.

One state ``S: [K, V]`` per (batch, head), decayed per key channel, then corrected toward the new
value along the key (a delta-rule write), as in HorizonStream's released memory::

    S~_t = diag(exp g_t) S_{t-1}                                  g_t <= 0 per key channel (or per head)
    S_t  = (I - beta_t k_t k_t^T) S~_t + beta_t k_t v_t^T  =  S~_t + k_t u_t^T,
    u_t  = beta_t (v_t - S~_t^T k_t)                              beta_t in [0, 1] per head
    o_t  = scale * q_t^T S_t

Layout as in :mod:`layers.ops.gla`: ``q, k, g: [B, T, H, K]`` (a per-head ``g: [B, T, H]`` is the same
decay for every key channel), ``v: [B, T, H, V]``, ``beta: [B, T, H]``,
state ``[B, H, K, V]`` float32 (float64 for float64 inputs). Keys are expected L2-normalised
(``beta |k|^2 <= 1`` keeps the write a contraction).
"""

from __future__ import annotations

import torch

from layers.ops.gla.naive import check_gla_inputs, compute_dtype_for, resolve_scale


def check_gated_delta_inputs(q, k, v, g, beta, initial_state) -> None:
    """The GLA checks, a per-head log-decay ``g [B, T, H]`` accepted beside the per-channel one, and
    ``beta``: a floating tensor [B, T, H] on q's device with values in [0, 1].

    Values (``g <= 0``, ``beta`` in [0, 1]) are checked on the CPU only (a check is a device sync).

    Raises:
        TypeError, ValueError: naming the argument, expected and actual values.
    """
    per_head = isinstance(g, torch.Tensor) and g.dim() == 3
    if per_head:
        if tuple(g.shape) != tuple(q.shape[:3]) or not g.is_floating_point():
            raise ValueError(
                f"gated_delta: a per-head g must be a floating tensor [B, T, H] = {tuple(q.shape[:3])},"
                f" got {tuple(g.shape)} {g.dtype}"
            )
        g_full = g.unsqueeze(-1).expand(q.shape)  # a view: the shape checks of GLA, no copy
    else:
        g_full = g
    check_gla_inputs(q, k, v, g_full, initial_state, check_decay_values=not q.is_cuda and not per_head)
    if per_head and not q.is_cuda and g.numel() and bool((g > 0).any()):
        raise ValueError(
            f"gated_delta: g is a log-decay and must be <= 0 everywhere, got max {g.max().item():.4g}"
        )
    if not isinstance(beta, torch.Tensor):
        raise TypeError(f"gated_delta: beta must be a torch.Tensor, got {type(beta).__name__}")
    if tuple(beta.shape) != tuple(q.shape[:3]) or not beta.is_floating_point():
        raise ValueError(
            f"gated_delta: beta must be a floating tensor [B, T, H] = {tuple(q.shape[:3])},"
            f" got {tuple(beta.shape)} {beta.dtype}"
        )
    if beta.device != q.device:
        raise ValueError(f"gated_delta: beta must be on q's device {q.device}, got {beta.device}")
    if not q.is_cuda and beta.numel() and bool(((beta < 0) | (beta > 1)).any()):
        raise ValueError(
            f"gated_delta: beta must lie in [0, 1], got min {beta.min().item():.4g},"
            f" max {beta.max().item():.4g}"
        )


def naive_recurrent_gated_delta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule by a plain loop over tokens (the ground truth).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        g: log-decay (<= 0), per key channel [B, T, H, K] or per head [B, T, H].
        beta: write strength [B, T, H] in [0, 1].
        scale: factor on the output; None means ``K ** -0.5``.
        initial_state: [B, H, K, V] or None (zeros).
        output_final_state: also return the state after the last token.

    Returns:
        ``(o [B, T, H, V] in q.dtype, final_state [B, H, K, V] float32/float64 or None)``.

    Example:
        >>> q = k = torch.nn.functional.normalize(torch.randn(1, 6, 2, 8), dim=-1)
        >>> v = torch.randn(1, 6, 2, 4); g = -torch.rand(1, 6, 2, 8); beta = torch.rand(1, 6, 2)
        >>> o, s = naive_recurrent_gated_delta(q, k, v, g, beta, output_final_state=True)
        >>> o.shape, s.shape
        (torch.Size([1, 6, 2, 4]), torch.Size([1, 2, 8, 4]))
    """
    check_gated_delta_inputs(q, k, v, g, beta, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    cdt = compute_dtype_for(q.dtype)
    qc, kc, vc, gc, bc = (x.to(cdt) for x in (q, k, v, g, beta))
    if gc.dim() == 3:  # per-head decay: the same for every key channel
        gc = gc.unsqueeze(-1)
    state = q.new_zeros(B, H, K, V, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    outputs = []
    for t in range(T):
        state = torch.exp(gc[:, t]).unsqueeze(-1) * state
        u = bc[:, t, :, None] * (vc[:, t] - torch.einsum("bhkv,bhk->bhv", state, kc[:, t]))
        state = state + kc[:, t].unsqueeze(-1) * u.unsqueeze(-2)
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", qc[:, t], state))
    o = torch.stack(outputs, dim=1) if outputs else q.new_zeros(B, 0, H, V, dtype=cdt)
    return o.to(q.dtype), (state if output_final_state else None)
