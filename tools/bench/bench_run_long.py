"""Constant memory and time of the whole `recon run` pipeline on a long video.

Runs ``recon run SOURCE`` (model step, point map, trajectory / intrinsics / timing writers; no
Rerun) and reads back its per-frame ``timing.txt`` (model-step latency, process RSS):

- flatness: median latency of frames [hi_lo, hi_hi) over the median of frames [lo_lo, lo_hi)
  (quality bar <= 1.10 for frames 9,900-10,000 vs 100-200); the same ratio of the means beside it
  (``mean_flatness``: counts the frames that measure a revisit, which the median may skip), and
  the 95th percentile of the whole run;
- RSS growth: RSS at the last frame minus RSS at frame 1,000 (quality bar <= 50 MB).

    recon synth /tmp/long --frames 10000 --trajectory loop --no-shadows
    python -m tools.bench.bench_run_long /tmp/long/seq_000/video.mp4 --out bench_run_long.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tools.bench.common import markdown_table, write_json


def summarise(timing: np.ndarray, low: tuple[int, int], high: tuple[int, int], rss_from: int) -> dict:
    """Flatness and RSS growth from rows ``frame latency_ms rss_mb`` (frames in source order)."""
    n = len(timing)
    lat, rss = timing[:, 1], timing[:, 2]
    high = (min(high[0], max(n - 100, 0)), min(high[1], n))
    lo_med, hi_med = float(np.median(lat[low[0] : low[1]])), float(np.median(lat[high[0] : high[1]]))
    start = min(rss_from, n - 1)
    return {
        "frames": n,
        "median_latency_ms_low": lo_med,
        "median_latency_ms_high": hi_med,
        "window_low": f"{low[0]}-{low[1]}",
        "window_high": f"{high[0]}-{high[1]}",
        "flatness": hi_med / lo_med,
        "mean_latency_ms_low": float(lat[low[0] : low[1]].mean()),
        "mean_latency_ms_high": float(lat[high[0] : high[1]].mean()),
        "mean_flatness": float(lat[high[0] : high[1]].mean() / lat[low[0] : low[1]].mean()),
        "p95_latency_ms": float(np.percentile(lat, 95)),
        "rss_mb_at_start": float(rss[start]),
        "rss_mb_at_end": float(rss[-1]),
        "rss_growth_mb": float(rss[-1] - rss[start]),
        "rss_from_frame": start,
        "mean_fps": float(1000.0 / lat.mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a long video / image folder / dataset sequence")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--out", default="bench_run_long.json")
    parser.add_argument("--run-dir", default=None, help="where recon run writes (default: a temp dir)")
    parser.add_argument("--no-revisit", action="store_true",
                        help="recon run --no-revisit (window odometry only)")
    args = parser.parse_args()
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench_run_long_"))
    cmd = [sys.executable, "-m", "recon.cli", "run", args.source, "--out", str(run_dir), "--quiet"]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.no_revisit:
        cmd.append("--no-revisit")
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        print(f"recon run failed with exit code {proc.returncode}", file=sys.stderr)
        return proc.returncode
    timing = np.loadtxt(run_dir / "timing.txt", ndmin=2)
    row = {"source": args.source, **summarise(timing, (100, 200), (9900, 10000), 1000)}
    print(markdown_table([row]))
    write_json(args.out, "bench_run_long", [row], command=" ".join(cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
