"""Benchmark: streaming latency and memory over long videos, per memory type, side by side.

Streams N frames (default 10,000) through the stream loop (``recon.infer.stream.StreamSession``, the
one ``recon run`` and ``recon eval`` use) for each memory type (``none``, ``gla``,
``elastic``, ``ttt``, and the growing-cache baseline ``causal_attention``), each type in its own
fresh process so resident memory is not shared. Per frame it records the step latency (the model
step plus the copy of its outputs to the host: ``FramePrediction.latency_ms``); every 100 frames the
resident set size (RSS). A run stops early when it passes ``--time-budget-s`` or
``--rss-limit-mb`` (the baseline does: its cache and its per-frame cost grow with every frame); the
frame where it stopped and why are recorded.

Reported per type (quality bars in the design docs):
- flatness = median latency of frames 9,900-10,000 / median of frames 100-200 (target <= 1.10);
  when a run stops early, its last 100 frames are used and the table says which;
- RSS growth from frame 1,000 to frame 10,000 in MB (target <= 50 MB) and peak RSS;
- frames/s of the streaming step (median latency of frames 100-200).

Outputs are copied to the host and dropped (a real run streams them to disk); inputs are a random
uint8 pattern sliding across the frame, generated on the fly.

Usage:
    .venv/bin/python -m tools.bench.bench_stream --out bench_stream.json                 # full
    .venv/bin/python -m tools.bench.bench_stream --frames 1200 --types gla,causal_attention  # quick
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from layers.registry import MEMORY_TYPES
from tools.bench.common import markdown_table, write_json

ALL_TYPES = tuple(MEMORY_TYPES)
REPO = Path(__file__).resolve().parents[2]  # where the workers run `python -m tools.bench.bench_stream`


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def worker(args: argparse.Namespace) -> dict:
    """Stream frames through one model in this process; return the measurements."""
    import numpy as np
    import torch

    from recon.infer.frames import SourceFrame
    from recon.infer.stream import StreamSession
    from recon.model import build_model, load_model_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = load_model_config(args.config, memory={"type": args.worker})
    model = build_model(cfg).to(device).eval()
    H, W = cfg.image_size
    base = np.random.default_rng(0).integers(0, 256, (H, 4 * W, 3), dtype=np.uint8)
    frames = (SourceFrame(t, t / 30.0, np.ascontiguousarray(base[:, t % (3 * W):t % (3 * W) + W]))
              for t in range(args.frames))
    session = StreamSession(model, device)
    latencies, cpu, rss, stop_reason = [], [], {}, "completed"
    start = time.perf_counter()
    for pred in session.run(frames):
        latencies.append(pred.latency_ms / 1000.0)
        cpu.append(pred.cpu_ms / 1000.0)
        n = len(latencies)
        if n % 100 == 0 or n == 1:
            rss[n] = _rss_mb()
            if rss[n] > args.rss_limit_mb:
                stop_reason = f"RSS {rss[n]:.0f} MB > limit {args.rss_limit_mb} MB"
                break
            if time.perf_counter() - start > args.time_budget_s:
                stop_reason = f"time budget {args.time_budget_s:.0f} s used"
                break
    state = session.state
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    return {"type": args.worker, "frames": len(latencies), "threads": args.threads, "device": args.device,
            "stop_reason": stop_reason,
            "latency_s": latencies, "cpu_s": cpu, "rss_mb": rss, "peak_rss_mb": peak,
            "state_bytes_end": state.nbytes(), "total_s": time.perf_counter() - start}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarize(run: dict, frames: int) -> dict:
    """Flatness, RSS growth and frames/s from a worker's raw measurements.

    Latency is measured twice per frame: wall clock, and CPU time of the (single) compute thread.
    On a shared CPU the wall clock also counts time the process waited for a core, so flatness is
    computed from CPU time when the run used one thread (on CUDA: from wall time).
    """
    n = len(run["latency_s"])
    late_lo = max(min(frames, n) - 100, 0)
    use_cpu = run.get("threads", 1) == 1 and run.get("device", "cpu") == "cpu"
    lat = run["cpu_s"] if use_cpu else run["latency_s"]
    early, late = _median(lat[100:200]), _median(lat[late_lo:late_lo + 100])
    wall = run["latency_s"]
    wall_early, wall_late = _median(wall[100:200]), _median(wall[late_lo:late_lo + 100])
    rss = {int(k): v for k, v in run["rss_mb"].items()}
    last = max(rss)
    rss_from = rss.get(1000)
    return {
        "type": run["type"],
        "frames_run": n,
        "stop_reason": run["stop_reason"],
        "clock": "thread CPU time" if use_cpu else "wall",
        "median_ms_100_200": 1e3 * early,
        "late_window": f"{late_lo}-{late_lo + 100}",
        "median_ms_late": 1e3 * late,
        "flatness": late / early,
        "wall_median_ms_100_200": 1e3 * wall_early,
        "wall_median_ms_late": 1e3 * wall_late,
        "wall_flatness": wall_late / wall_early,
        "rss_mb_1000": rss_from,
        f"rss_mb_{last}": rss[last],
        "rss_growth_mb": (rss[last] - rss_from) if rss_from is not None else None,
        "rss_growth_window": f"1000-{last}",
        "peak_rss_mb": run["peak_rss_mb"],
        "frames_per_s": 1.0 / early,  # compute-bound rate (CPU time on one thread)
        "state_mb_end": run["state_bytes_end"] / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny", help="model preset or YAML (default: tiny)")
    parser.add_argument("--types", default=",".join(ALL_TYPES), help="comma-separated memory types")
    parser.add_argument("--frames", type=int, default=10_000, help="frames per type")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--jobs", type=int, default=1,
                        help="memory types run at once, each in its own process (CPU time per frame is "
                        "what flatness uses, so parallel runs do not distort it)")
    parser.add_argument("--time-budget-s", type=float, default=1800.0, help="stop a type after this long")
    parser.add_argument("--rss-limit-mb", type=float, default=8000.0, help="stop a type above this RSS")
    parser.add_argument("--out", type=Path, help="write the summary and raw measurements as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        args.worker_out.write_text(json.dumps(worker(args)))
        return 0

    types = [t.strip() for t in args.types.split(",") if t.strip()]
    runs, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        pending, active = list(types), []
        while pending or active:
            while pending and len(active) < args.jobs:  # launch up to --jobs workers at once
                mem = pending.pop(0)
                out = Path(tmp) / f"{mem}.json"
                cmd = [sys.executable, "-m", "tools.bench.bench_stream", "--worker", mem,
                       "--worker-out", str(out),
                       "--config", args.config, "--frames", str(args.frames), "--threads", str(args.threads),
                       "--device", args.device, "--time-budget-s", str(args.time_budget_s),
                       "--rss-limit-mb", str(args.rss_limit_mb)]
                proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO)
                active.append((mem, out, proc))
            mem, out, proc = active.pop(0)
            _, err = proc.communicate()
            if proc.returncode != 0 or not out.exists():
                print(f"{mem}: worker failed (exit {proc.returncode}):\n{err[-2000:]}", file=sys.stderr)
                rows.append({"type": mem, "error": err[-2000:]})
                continue
            run = json.loads(out.read_text())
            runs.append(run)
            rows.append(summarize(run, args.frames))
            r = rows[-1]
            print(f"{mem}: {r['frames_run']} frames ({r['stop_reason']}), {r['frames_per_s']:.1f} frames/s, "
                  f"flatness {r['flatness']:.3f}, RSS growth {r['rss_growth_mb']} MB",
                  file=sys.stderr, flush=True)

    print(f"\nconfig {args.config}, {args.frames} frames, device {args.device}, {args.threads} thread(s)\n")
    table = []
    for r in rows:
        if "error" in r:
            table.append({"memory": r["type"], "frames run": "failed"})
            continue
        growth = ("n/a" if r["rss_growth_mb"] is None
                  else f"{r['rss_growth_mb']:.1f} ({r['rss_growth_window']})")
        table.append({
            "memory": r["type"], "frames run": f"{r['frames_run']} ({r['stop_reason']})",
            "clock": r["clock"], "ms/frame 100-200": r["median_ms_100_200"],
            "ms/frame late (window)": f"{r['median_ms_late']:.2f} ({r['late_window']})",
            "flatness": r["flatness"], "wall flatness": r["wall_flatness"],
            "RSS growth MB (window)": growth, "peak RSS MB": r["peak_rss_mb"],
            "state MB at end": r["state_mb_end"], "frames/s": r["frames_per_s"],
        })
    print(markdown_table(table))
    if args.out:
        settings = {"config": args.config, "frames": args.frames, "device": args.device,
                    "threads": args.threads, "time_budget_s": args.time_budget_s,
                    "rss_limit_mb": args.rss_limit_mb,
                    "command": " ".join(["python -m tools.bench.bench_stream", *(argv or sys.argv[1:])])}
        raw = [{"type": r["type"], "latency_s": r["latency_s"], "cpu_s": r["cpu_s"], "rss_mb": r["rss_mb"]}
               for r in runs]
        write_json(args.out, "bench_stream", rows, settings=settings, raw=raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
