"""Benchmark the synthetic generator: rendered frames/s by resolution, shadows and torch threads,
plus the TUM writer (render + PNGs + video) and the clip loader.

    .venv/bin/python -m tools.bench.bench_synth --frames 20 --seeds 1 --out synth_bench.json

Prints a Markdown table and writes JSON (environment incl. load average + rows). Frames of a
'mixed' trajectory with 2 moving objects, 8 furniture primitives and 4 posters; the first frame
(warm-up) is not timed. Two rates per row: wall-clock frames/s, and frames per CPU-second of this
process (``time.process_time``), which is what one idle core would give for a single-threaded
row and stays meaningful on a shared, loaded CPU (quality.md: absolute wall times there are noise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from data.clips import ClipDataset, make_loader
from data.synth import SynthConfig, synthetic_sequence, write_tum_sequence
from tools.bench.common import markdown_table, write_json

RESOLUTIONS = ((128, 96), (256, 192))
COLUMNS = ("what", "resolution", "shadows", "threads", "frames_per_s", "frames_per_cpu_s", "ms_per_frame")


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _render_row(width: int, height: int, frames: int, shadows: bool, threads: int | None, seeds) -> dict:
    walls, cpus = [], []
    for seed in seeds:
        config = SynthConfig(
            num_frames=frames + 1, width=width, height=height, num_dynamic=2, shadows=shadows
        )
        seq = synthetic_sequence(config, seed)
        seq.load.renderer.num_threads = threads
        seq[0]
        wall, cpu = _timed(lambda seq=seq: [seq[i] for i in range(1, frames + 1)])
        walls.append(wall)
        cpus.append(cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {
        "what": "render",
        "resolution": f"{width}x{height}",
        "shadows": shadows,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "frames_per_s": frames / wall,
        "frames_per_cpu_s": frames / cpu,
        "ms_per_frame": 1000.0 * wall / frames,
    }


def _writer_row(width: int, height: int, frames: int) -> dict:
    seq = synthetic_sequence(SynthConfig(num_frames=frames, width=width, height=height, num_dynamic=2), 0)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = _timed(lambda: write_tum_sequence(seq, Path(tmp) / "seq", video=True))
    return {
        "what": "render + write TUM (PNGs, mp4)",
        "resolution": f"{width}x{height}",
        "shadows": True,
        "threads": 1,
        "frames_per_s": frames / wall,
        "frames_per_cpu_s": frames / cpu,
        "ms_per_frame": 1000.0 * wall / frames,
    }


def _loader_row(frames: int, workers: int) -> dict:
    seqs = [
        synthetic_sequence(SynthConfig(num_frames=frames, width=160, height=120, num_dynamic=2), s)
        for s in range(2)
    ]
    ds = ClipDataset(seqs, clip_length=8, size=(96, 128), stride=(1, 3), epoch_length=8, seed=0)
    count = []
    wall, cpu = _timed(
        lambda: count.extend(
            b["video"].shape[0] * b["video"].shape[1] for b in make_loader(ds, 2, num_workers=workers)
        )
    )
    n = sum(count)
    return {
        "what": f"clip loader 160x120 -> 128x96, T=8, {workers} workers",
        "resolution": "128x96",
        "shadows": True,
        "threads": 1,
        "frames_per_s": n / wall,
        "frames_per_cpu_s": n / cpu if workers == 0 else float("nan"),  # workers' CPU is not ours
        "ms_per_frame": 1000.0 * wall / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="timed frames per run (default 40)")
    parser.add_argument(
        "--seeds", type=int, default=2, help="scenes per render row, median taken (default 2)"
    )
    parser.add_argument("--out", type=Path, help="write JSON results here")
    args = parser.parse_args()
    seeds = range(args.seeds)
    jobs = [
        (lambda w=w, h=h, s=s, t=t: _render_row(w, h, args.frames, s, t, seeds))
        for w, h in RESOLUTIONS
        for s in (True, False)
        for t in (1, None)
    ]
    jobs += [
        lambda: _writer_row(128, 96, args.frames),
        lambda: _loader_row(args.frames, 0),
        lambda: _loader_row(args.frames, 2),
    ]
    rows = []
    for job in jobs:
        rows.append(job())
        print(
            f"[{len(rows)}/{len(jobs)}] {rows[-1]['what']} {rows[-1]['resolution']}: "
            f"{rows[-1]['frames_per_s']:.1f} frames/s",
            file=sys.stderr,
            flush=True,
        )
    print(markdown_table(rows, COLUMNS))
    if args.out:
        print(f"wrote {write_json(args.out, 'synth', rows, frames=args.frames, seeds=args.seeds)}")


if __name__ == "__main__":
    main()
