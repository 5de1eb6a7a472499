"""Channel-wise gated linear attention (GLA): the reference token loop and the shared input checks.

One state ``S: [K, V]`` per (batch, head), decayed per key channel and written every token
(the flash-linear-attention convention)::

    S_t = diag(exp g_t) S_{t-1} + k_t v_t^T          S_{-1} = initial_state or 0, g_t <= 0
    o_t = scale * q_t^T S_t                          (inclusive: token t reads its own write)

Layout is sequence-first: ``q, k, g: [B, T, H, K]``, ``v: [B, T, H, V]``, state ``[B, H, K, V]``.
Every faster form (``chunk.py``, ``triton.py``) has this signature and is tested against this loop.
"""

from __future__ import annotations

import torch


def compute_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the GLA ops: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """The output scale: ``scale`` if given, else ``head_dim ** -0.5``."""
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"gla: scale must be a float or None, got {type(scale).__name__}")
    return float(scale)


def check_gla_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None,
    check_decay_values: bool = True,
) -> None:
    """Validate the arguments of every GLA form.

    Args:
        q, k, g: [B, T, H, K]; v: [B, T, H, V]; initial_state: [B, H, K, V] or None.
        check_decay_values: also check ``g <= 0`` (one reduction over g; a device sync on CUDA).

    Raises:
        TypeError: an argument that is not a tensor.
        ValueError: a shape, dtype, device or value that breaks the contract; the message names the
            argument and prints the expected and actual value.
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"gla: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"gla: {name} must be 4-D [B, T, H, D], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"gla: {name} must be floating point, got {t.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"gla: k must have q's shape [B, T, H, K] = {tuple(q.shape)}, got {tuple(k.shape)}")
    if g.shape != q.shape:
        raise ValueError(f"gla: g must have q's shape [B, T, H, K] = {tuple(q.shape)}, got {tuple(g.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"gla: v must be [B, T, H, V] with B, T, H = {tuple(q.shape[:3])} (from q), got {tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"gla: q, k, v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    for name, t in (("k", k), ("v", v), ("g", g)):
        if t.device != q.device:
            raise ValueError(f"gla: {name} must be on q's device {q.device}, got {t.device}")
    if check_decay_values and g.numel() > 0 and bool((g > 0).any()):
        raise ValueError(f"gla: g is a log-decay and must be <= 0 everywhere, got max {g.max().item():.4g}")
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor) or not initial_state.is_floating_point():
            raise ValueError(
                "gla: initial_state must be a floating-point tensor [B, H, K, V],"
                f" got {type(initial_state).__name__}"
                + (f" of dtype {initial_state.dtype}" if isinstance(initial_state, torch.Tensor) else "")
            )
        B, _, H, K = q.shape
        V = v.shape[-1]
        if tuple(initial_state.shape) != (B, H, K, V):
            raise ValueError(
                f"gla: initial_state must be [B, H, K, V] = {(B, H, K, V)}, got {tuple(initial_state.shape)}"
            )
        if initial_state.device != q.device:
            raise ValueError(
                f"gla: initial_state must be on q's device {q.device}, got {initial_state.device}"
            )


def naive_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention by a plain loop over tokens (the ground truth).

    Args:
        q: queries [B, T, H, K].
        k: keys [B, T, H, K].
        v: values [B, T, H, V].
        g: per-token, per-key-channel log-decay [B, T, H, K], all <= 0 (``exp g`` is the retention).
        scale: factor on the output; None means ``K ** -0.5``.
        initial_state: state before the first token [B, H, K, V] (any float dtype); None means zeros.
        output_final_state: also return the state after the last token.

    Returns:
        ``(o, final_state)``: o [B, T, H, V] in q.dtype; final_state [B, H, K, V] float32 (float64 for
        float64 inputs) or None. Accumulates in float32 (float64 for float64 inputs).

    Example:
        >>> q = k = torch.randn(1, 10, 2, 8); v = torch.randn(1, 10, 2, 4)
        >>> g = -torch.rand(1, 10, 2, 8)
        >>> o, s = naive_recurrent_gla(q, k, v, g, output_final_state=True)
        >>> o.shape, s.shape, s.dtype
        (torch.Size([1, 10, 2, 4]), torch.Size([1, 2, 8, 4]), torch.float32)
    """
    check_gla_inputs(q, k, v, g, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = resolve_scale(scale, K)
    cdt = compute_dtype_for(q.dtype)
    qc, kc, vc, gc = (x.to(cdt) for x in (q, k, v, g))
    state = q.new_zeros(B, H, K, V, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    outputs = []
    for t in range(T):
        state = torch.exp(gc[:, t]).unsqueeze(-1) * state + kc[:, t].unsqueeze(-1) * vc[:, t].unsqueeze(-2)
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", qc[:, t], state))
    o = torch.stack(outputs, dim=1) if outputs else q.new_zeros(B, 0, H, V, dtype=cdt)
    return o.to(q.dtype), (state if output_final_state else None)


def check_chunk_size(chunk_size: int) -> None:
    """``chunk_size`` must be a power of two (the intra-chunk part halves the chunk recursively)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"gla: chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"gla: chunk_size must be a power of two (1, 2, 4, ..., 64, ...), got {chunk_size}")
