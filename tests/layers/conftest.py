"""Fixtures of the memory-layer tests.

``torch.empty`` and ``torch.empty_like`` return NaN-filled floating-point tensors here, so that a
kernel or a parallel form that leaves part of its output unwritten fails the NaN checks instead of
passing by the luck of zeroed memory (scoped to ``tests/layers``).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def nan_filled_empty(monkeypatch):
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def fill(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point() or t.is_complex():
            with torch.no_grad():
                t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: fill(real_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: fill(real_empty_like(*a, **kw)))
    yield
