"""Checked argparse types: numbers finite and in range, file paths, or a one-line usage error.

``type=finite_float(low=0, low_open=True)`` refuses ``nan``, ``inf``, text and values out of range
at parse time, before anything is loaded, with a message that gives the range and the value
(argparse adds the option's name: ``argument --voxel-size: expected a finite number > 0, got
'nan'``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def _checked_type(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str,
                  name: str) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)``, refused with ``expected`` unless ``ok(value)``."""

    def parse(text: str):
        try:
            value = convert(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def finite_float(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] (``low_open`` / ``high_open``: exclusive)."""
    rng = _range_text(low, high, low_open, high_open)

    def ok(value: float) -> bool:
        return (math.isfinite(value)
                and (low is None or (value > low if low_open else value >= low))
                and (high is None or (value < high if high_open else value <= high)))

    return _checked_type(float, ok, "a finite number" + (f" {rng}" if rng else ""), "finite_float")


def bounded_int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    rng = _range_text(low, high, False, False)

    def ok(value: int) -> bool:
        return (low is None or value >= low) and (high is None or value <= high)

    return _checked_type(int, ok, "an integer" + (f" {rng}" if rng else ""), "bounded_int")


def _is_file_path(text: str) -> bool:
    from pathlib import Path

    return bool(text.strip()) and not Path(text).is_dir()


def file_path(expected: str = "a file path") -> Callable[[str], str]:
    """An argparse type: a non-empty path that is not an existing folder (checked at parse time,
    so a writer never gets ``''`` or a directory)."""
    return _checked_type(str, _is_file_path, f"{expected} (not empty, not a folder)", "file_path")
