"""Comparison helpers for numerical tests (fast forms against their references)."""

from __future__ import annotations

import torch


def rel_rms(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Relative RMS error ``||ref - x|| / ||ref||`` in float64 (``||ref - x||`` when ref is 0)."""
    ref64, x64 = ref.detach().double(), x.detach().double()
    denom = ref64.norm().item()
    err = (ref64 - x64).norm().item()
    return err / denom if denom > 0 else err


def assert_rel_close(ref: torch.Tensor, x: torch.Tensor, tol: float, name: str) -> None:
    """Assert shapes match, ``x`` is finite, and its relative RMS error to ``ref`` is <= tol."""
    assert ref.shape == x.shape, f"{name}: shape {tuple(x.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(x).all(), f"{name}: non-finite values ({(~torch.isfinite(x)).sum()} entries)"
    assert torch.isfinite(ref).all(), f"{name}: reference has non-finite values"
    err = rel_rms(ref, x)
    assert err <= tol, f"{name}: relative RMS error {err:.3e} > tolerance {tol:.1e}"
