"""Shared helpers of the benchmarks in ``tools/bench``: timing, environment record, table and JSON output.

A benchmark builds a list of rows (dicts with the same keys), prints them with
:func:`markdown_table` and saves them with :func:`write_json`, together with :func:`environment`,
so that every number quoted in the docs comes from a command anyone can rerun. Ratios between
methods are measured side by side in one run (absolute times on a shared CPU are noise). The
benchmarks run as modules from the repository root (``tools`` is not an installed package):
``.venv/bin/python -m tools.bench.bench_gla --out bench_gla.json``.

Example:
    >>> t = time_call(lambda: sum(range(1000)), repeats=3, warmup=1)
    >>> sorted(t) == ['max_s', 'mean_s', 'median_s', 'min_s', 'repeats', 'times_s']
    True
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from recon.files import atomic_write


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work (no-op on the CPU), so a timer measures finished work."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Wall-clock time of ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed ones.

    Args:
        fn: the work to time (called with no arguments; its result is discarded).
        repeats: number of timed calls (>= 1).
        warmup: untimed calls before (compilation, allocator, caches).
        device: device to synchronize before and after each call (CUDA), or None.
        max_seconds: stop repeating once this much time was spent on timed calls (at least one
            call is always timed), for slow references.

    Returns:
        dict with ``median_s``, ``min_s``, ``mean_s``, ``max_s`` (seconds), ``repeats`` (calls timed)
        and ``times_s`` (every timed call).
    """
    if repeats < 1:
        raise ValueError(f"time_call: repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if max_seconds is not None and sum(times) >= max_seconds:
            break
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
        "max_s": max(times),
        "repeats": len(times),
        "times_s": times,
    }


def environment() -> dict[str, Any]:
    """Where a benchmark ran: versions, CPU/GPU, torch threads, load average, time (UTC)."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if hasattr(os, "getloadavg"):
        env["load_average_1m"] = os.getloadavg()[0]
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    env["triton_interpret"] = os.environ.get("TRITON_INTERPRET")
    return env


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (dicts); ``columns`` picks and orders keys (default: all
    keys of the first row). Floats get 4 significant digits."""
    if not rows:
        return "(no rows)"
    columns = list(columns) if columns is not None else list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_format_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def write_json(path: str | os.PathLike, name: str, rows: Sequence[dict[str, Any]], **extra: Any) -> Path:
    """Write ``{"benchmark": name, "environment": ..., "rows": rows, **extra}`` as JSON (atomic).

    Returns:
        The path written. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "environment": environment(), "rows": list(rows), **extra}
    text = json.dumps(payload, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def add_linear_attention_arguments(parser, repeats: int) -> None:
    """The options every linear-attention op benchmark takes (``bench_gla``, ``bench_gated_delta``):
    the input shape (B, T, H, K, V), the chunk size, timed repeats of the chunked forms
    (default ``repeats``) and of the token loop, the device, torch CPU threads and the JSON path;
    ``--threads`` is applied by :func:`apply_threads`."""
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--key-dim", type=int, default=64)
    parser.add_argument("--value-dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed calls of each chunked form")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed calls of the token loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")


def apply_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given."""
    if threads:
        torch.set_num_threads(threads)
