"""Checked argparse types for numeric options: finite and in range, or a one-line usage error.

``type=finite_float(low=0, low_open=True)`` refuses ``nan``, ``inf``, text and values out of range
at parse time, before anything is loaded, with a message that gives the range and the value
(argparse adds the option's name: ``argument --voxel-size: expected a finite number > 0, got
'nan'``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def finite_float(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] (``low_open`` / ``high_open``: exclusive)."""
    rng = _range_text(low, high, low_open, high_open)
    expected = "a finite number" + (f" {rng}" if rng else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = "finite_float"  # argparse names the type in some messages
    return parse


def bounded_int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    rng = _range_text(low, high, False, False)
    expected = "an integer" + (f" {rng}" if rng else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = "bounded_int"
    return parse
