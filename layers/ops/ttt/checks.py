"""Argument checks shared by the TTT and elastic ops (clear ValueError / TypeError naming the input)."""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (fast weights and states never in half)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_fast_weight_args(
    op: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    w0: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    chunk_size: int,
) -> dict[str, int]:
    """Validate ``q, k [B,T,H,K]``, ``v [B,T,H,V]``, ``eta [B,T,H]``, ``w0, w2 [B,H,K,Dh]``,
    ``w1 [B,H,Dh,V]`` and ``chunk_size >= 1``.

    Returns:
        the bound sizes {"B", "T", "H", "K", "V", "Dh"}.

    Raises:
        TypeError: a non-tensor argument or a non-int chunk size.
        ValueError: a wrong rank, mismatched size or chunk_size < 1, naming the argument with the
            expected and actual shapes.
    """
    named = (("q", q), ("k", k), ("v", v), ("eta", eta), ("w0", w0), ("w1", w1), ("w2", w2))
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{op}: {name} must be floating point, got {t.dtype}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"{op}: chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"{op}: chunk_size must be >= 1, got {chunk_size}")
    if q.dim() != 4:
        raise ValueError(f"{op}: q must be [B, T, H, K], got shape {tuple(q.shape)}")
    B, T, H, K = q.shape
    if T < 1:
        raise ValueError(f"{op}: q must have at least one token (T >= 1), got shape {tuple(q.shape)}")
    if tuple(k.shape) != (B, T, H, K):
        raise ValueError(f"{op}: k must have the shape of q {(B, T, H, K)}, got {tuple(k.shape)}")
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, T, H):
        raise ValueError(f"{op}: v must be [B, T, H, V] = [{B}, {T}, {H}, V], got {tuple(v.shape)}")
    V = v.shape[3]
    if tuple(eta.shape) != (B, T, H):
        raise ValueError(f"{op}: eta must be [B, T, H] = {(B, T, H)}, got {tuple(eta.shape)}")
    if w0.dim() != 4 or tuple(w0.shape[:3]) != (B, H, K):
        raise ValueError(f"{op}: w0 must be [B, H, K, Dh] = [{B}, {H}, {K}, Dh], got {tuple(w0.shape)}")
    Dh = w0.shape[3]
    if tuple(w2.shape) != (B, H, K, Dh):
        raise ValueError(f"{op}: w2 must have the shape of w0 {(B, H, K, Dh)}, got {tuple(w2.shape)}")
    if tuple(w1.shape) != (B, H, Dh, V):
        raise ValueError(f"{op}: w1 must be [B, H, Dh, V] = {(B, H, Dh, V)}, got {tuple(w1.shape)}")
    devices = {t.device for _, t in named}
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    return {"B": B, "T": T, "H": H, "K": K, "V": V, "Dh": Dh}


def head_first(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, H, ...] -> [B, H, T, ...] in ``dtype``."""
    return x.transpose(1, 2).to(dtype)


def chunk_bounds(seq_len: int, chunk_size: int) -> list[tuple[int, int]]:
    """[(start, end)] of consecutive chunks of ``chunk_size`` tokens; the last may be shorter."""
    return [(s, min(s + chunk_size, seq_len)) for s in range(0, seq_len, chunk_size)]
