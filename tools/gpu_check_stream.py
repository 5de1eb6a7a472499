"""Long streaming run of a model preset through ``model.step``: part of tools/gpu_check.sh.

Reuses the streaming loop of ``tools/bench/bench_stream.py`` (``worker``: one model, B=1, a textured
pattern sliding across the frame, outputs dropped, no autograd) and its ``summarize`` (flatness =
median latency of the last 100 frames / frames 100-200; frames/s from frames 100-200), in this
process, and adds what a GPU run needs: ``torch.cuda.max_memory_allocated`` over the run, the state
size at the end (``state.nbytes()``) and latency quantiles. The preset's own memory type is used
unless ``--memory`` names another.

Usage (from the repo root, as a module; tools/gpu_check.sh exports ``PYTHONPATH`` to the root):
    python -m tools.gpu_check_stream --config tiny --frames 1000 --device cuda --out stream.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tools.bench.bench_stream import summarize, worker


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", help="model preset or YAML (default: tiny)")
    parser.add_argument("--memory", default=None, help="memory type (default: the preset's)")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--time-budget-s", type=float, default=600.0,
                        help="stop early (and say so) after this long")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be >= 1, got {args.frames}")

    from recon.model import load_model_config

    memory = args.memory or load_model_config(args.config).memory.type
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wargs = argparse.Namespace(worker=memory, config=args.config, frames=args.frames, threads=args.threads,
                               device=args.device, time_budget_s=args.time_budget_s, rss_limit_mb=1e9)
    t0 = time.perf_counter()
    run = worker(wargs)
    wall = time.perf_counter() - t0
    summary = summarize(run, args.frames)
    lat = run["latency_s"]
    result = {
        "config": args.config,
        "memory": memory,
        "device": args.device,
        "frames_requested": args.frames,
        **summary,
        "frames_per_s_overall": len(lat) / run["total_s"],  # includes the first frames (compilation)
        "first_frame_ms": 1e3 * lat[0],
        "latency_ms_p50": 1e3 * statistics.median(lat),
        "latency_ms_p90": 1e3 * _quantile(lat, 0.9),
        "latency_ms_p99": 1e3 * _quantile(lat, 0.99),
        "latency_ms_max_after_10": 1e3 * max(lat[10:]) if len(lat) > 10 else None,
        "state_bytes_end": run["state_bytes_end"],
        "run_s": wall,
    }
    if device.type == "cuda":
        result["cuda_max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["cuda_max_memory_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    print(f"{args.config}/{memory} on {args.device}: {result['frames_run']} frames "
          f"({result['stop_reason']}), {result['frames_per_s']:.1f} frames/s, "
          f"flatness {result['flatness']:.3f}, state {result['state_bytes_end'] / 2**20:.2f} MiB", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["frames_run"] == args.frames else 1


if __name__ == "__main__":
    raise SystemExit(main())
