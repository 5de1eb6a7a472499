"""Benchmark the synthetic generator: rendered frames/s by resolution, shadows and torch threads,
plus the TUM writer (render + PNGs + video) and the clip loader.

    .venv/bin/python tools/bench/bench_synth.py --frames 60 --out synth_bench.json

Prints a Markdown table and writes JSON (environment + rows). Frames of a 'mixed' trajectory
with 2 moving objects, 8 furniture primitives and 4 posters; the first frame (warm-up) is not
timed. Absolute figures depend on the CPU and its load (quality.md): compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from data.clips import ClipDataset, make_loader
from data.synth import SynthConfig, synthetic_sequence, write_tum_sequence
from recon.commands.env import collect

RESOLUTIONS = ((128, 96), (256, 192))


def _render_rate(width: int, height: int, frames: int, shadows: bool, threads: int | None, seeds) -> dict:
    rates = []
    for seed in seeds:
        seq = synthetic_sequence(
            SynthConfig(num_frames=frames + 1, width=width, height=height, num_dynamic=2, shadows=shadows),
            seed,
        )
        seq.load.renderer.num_threads = threads
        seq[0]
        start = time.perf_counter()
        for i in range(1, frames + 1):
            seq[i]
        rates.append(frames / (time.perf_counter() - start))
    return {
        "what": "render",
        "resolution": f"{width}x{height}",
        "shadows": shadows,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "frames_per_s": statistics.median(rates),
        "ms_per_frame": 1000.0 / statistics.median(rates),
        "runs": len(rates),
    }


def _writer_rate(width: int, height: int, frames: int) -> dict:
    seq = synthetic_sequence(SynthConfig(num_frames=frames, width=width, height=height, num_dynamic=2), 0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_tum_sequence(seq, Path(tmp) / "seq", video=True)
        elapsed = time.perf_counter() - start
    return {
        "what": "render + write TUM (PNGs, mp4)",
        "resolution": f"{width}x{height}",
        "shadows": True,
        "threads": 1,
        "frames_per_s": frames / elapsed,
        "ms_per_frame": 1000 * elapsed / frames,
        "runs": 1,
    }


def _loader_rate(frames: int, workers: int) -> dict:
    seqs = [
        synthetic_sequence(SynthConfig(num_frames=frames, width=160, height=120, num_dynamic=2), s)
        for s in range(2)
    ]
    ds = ClipDataset(seqs, clip_length=8, size=(96, 128), stride=(1, 3), epoch_length=8, seed=0)
    start = time.perf_counter()
    n = sum(b["video"].shape[0] * b["video"].shape[1] for b in make_loader(ds, 2, num_workers=workers))
    elapsed = time.perf_counter() - start
    return {
        "what": f"clip loader (160x120 -> 128x96, T=8, {workers} workers)",
        "resolution": "128x96",
        "shadows": True,
        "threads": 1,
        "frames_per_s": n / elapsed,
        "ms_per_frame": 1000 * elapsed / n,
        "runs": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="timed frames per run (default 60)")
    parser.add_argument("--seeds", type=int, default=2, help="scenes per row, median taken (default 2)")
    parser.add_argument("--out", type=Path, help="write JSON results here")
    args = parser.parse_args()
    seeds = range(args.seeds)
    jobs = [
        (lambda w=w, h=h, s=s, t=t: _render_rate(w, h, args.frames, s, t, seeds))
        for w, h in RESOLUTIONS
        for s in (True, False)
        for t in (1, None)
    ]
    jobs += [
        lambda: _writer_rate(128, 96, args.frames),
        lambda: _loader_rate(args.frames, 0),
        lambda: _loader_rate(args.frames, 2),
    ]
    print("| what | resolution | shadows | torch threads | frames/s | ms/frame |")
    print("|---|---|---|---|---|---|", flush=True)
    rows = []
    for job in jobs:
        r = job()
        rows.append(r)
        print(
            f"| {r['what']} | {r['resolution']} | {'yes' if r['shadows'] else 'no'} | {r['threads']} "
            f"| {r['frames_per_s']:.1f} | {r['ms_per_frame']:.1f} |",
            flush=True,
        )
    if args.out:
        args.out.write_text(
            json.dumps({"env": collect(), "frames": args.frames, "rows": rows}, indent=2) + "\n"
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
