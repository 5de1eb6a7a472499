"""Constant memory and time of the whole `recon run` pipeline on a long video.

Runs ``recon run SOURCE`` (model step, point map, trajectory / intrinsics / timing writers; no
Rerun) and reads back its per-frame ``timing.txt`` (model-step latency, process RSS):

- flatness: median latency of frames [hi_lo, hi_hi) over the median of frames [lo_lo, lo_hi)
  (quality bar <= 1.10 for frames 9,900-10,000 vs 100-200); the same ratio of the means beside it
  (``mean_flatness``: counts the frames that measure a revisit, which the median may skip), and
  the 95th percentile of the whole run;
- ``cpu_flatness``: the same ratio of the step's CPU time on its thread (``timing.txt``'s
  ``cpu_ms``): insensitive to other threads and processes, so a wall-time growth it does not show
  comes from contention (the video decoder's threads, the point map's merges, other jobs), not
  from the model step doing more work;
- RSS growth: RSS at the last frame minus RSS at frame 1,000 (quality bar <= 50 MB);
- medians of every 500 frames;
- with ``--period P`` (the frames of one pass of a looping camera path): the median of the same
  100-frame window one, two, ... periods earlier, and ``same_phase_flatness``, the late window
  over the earliest same-phase window of the second pass or later. The window 100-200 sees no
  revisit (no keyframe is old enough), while a late window on a loop measures revisits at a cost
  that depends on where on the loop it is; the same-phase ratio compares like with like, so it
  isolates growth with the length of the stream. The bar stays the 100-200 one;
- ``schedule_classes``: the same two windows split by the work a frame is scheduled to do (the
  self-calibration fits every ``head.refine.focal_every``-th frame, the revisit measurement every
  ``head.revisit.measure_every``-th frame): each class's median early and late and their ratio.
  Frames 100-200 measure no revisit (no keyframe is old enough), so a late window has fewer
  frames doing only the per-frame work, and its median moves toward the scheduled frames' cost
  without any frame getting dearer; ``base_flatness`` (the frames scheduled for neither) is the
  ratio that says whether the per-frame work grew.

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

from recon.commands.argtypes import bounded_int
from tools.bench.common import markdown_table, write_json


def late_window(high: tuple[int, int], n: int) -> tuple[int, int]:
    """The late window ``high`` of a run of ``n`` frames (its last 100 frames when shorter)."""
    return min(high[0], max(n - 100, 0)), min(high[1], n)


def summarise(timing: np.ndarray, low: tuple[int, int], high: tuple[int, int], rss_from: int) -> dict:
    """Flatness and RSS growth from rows ``frame latency_ms rss_mb [cpu_ms]`` (frames in source
    order; ``cpu_flatness`` is None for files without the CPU column)."""
    n = len(timing)
    lat, rss = timing[:, 1], timing[:, 2]
    high = late_window(high, n)
    lo_med, hi_med = float(np.median(lat[low[0] : low[1]])), float(np.median(lat[high[0] : high[1]]))
    start = min(rss_from, n - 1)
    cpu = timing[:, 3] if timing.shape[1] > 3 else None
    cpu_flatness = (float(np.median(cpu[high[0] : high[1]]) / np.median(cpu[low[0] : low[1]]))
                    if cpu is not None else None)
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
        "cpu_flatness": cpu_flatness,
        "p95_latency_ms": float(np.percentile(lat, 95)),
        "rss_mb_at_start": float(rss[start]),
        "rss_mb_at_end": float(rss[-1]),
        "rss_growth_mb": float(rss[-1] - rss[start]),
        "rss_from_frame": start,
        "mean_fps": float(1000.0 / lat.mean()),
        "median_per_500_ms": [float(np.median(lat[i : i + 500])) for i in range(0, n - 499, 500)],
    }


def same_phase(timing: np.ndarray, high: tuple[int, int], period: int) -> dict:
    """Medians of the window ``high`` moved back by 1, 2, ... ``period`` frames (latest first) and
    the late window's median over that of the earliest window starting at or after ``period``."""
    lat, size = timing[:, 1], high[1] - high[0]
    windows = [{"window": f"{start}-{start + size}", "start": start,
                "median_ms": float(np.median(lat[start : start + size]))}
               for start in range(high[0], -1, -period) if start + size <= len(lat)]
    revisits = [w for w in windows if w["start"] >= period]
    ratio = windows[0]["median_ms"] / revisits[-1]["median_ms"] if len(revisits) > 1 else None
    return {"period": period, "same_phase_medians_ms": windows, "same_phase_flatness": ratio}


def schedule_classes(timing: np.ndarray, low: tuple[int, int], high: tuple[int, int],
                     schedules: dict[str, int]) -> dict:
    """Medians of the windows ``low`` and ``high`` per schedule class: a frame n belongs to the
    class named by the schedules ``{name: every}`` with ``n % every == 0`` ("none" for neither,
    names joined by "+" for several); ``base_flatness`` is the "none" class's ratio (None when a
    window has no such frame)."""
    frames, lat = timing[:, 0].astype(int), timing[:, 1]

    def label(n: int) -> str:
        return "+".join(name for name, every in schedules.items() if n % every == 0) or "none"

    labels = np.array([label(int(n)) for n in frames])
    classes = {}
    for name in dict.fromkeys(labels[low[0] : high[1]]):
        lo = lat[low[0] : low[1]][labels[low[0] : low[1]] == name]
        hi = lat[high[0] : high[1]][labels[high[0] : high[1]] == name]
        if len(lo) and len(hi):
            classes[name] = {"frames_low": int(len(lo)), "frames_high": int(len(hi)),
                             "median_ms_low": float(np.median(lo)), "median_ms_high": float(np.median(hi)),
                             "flatness": float(np.median(hi) / np.median(lo))}
    base = classes.get("none", {}).get("flatness")
    return {"schedules": schedules, "schedule_classes": classes, "base_flatness": base}


def checkpoint_schedules(checkpoint: str | None, revisit: bool, refine: bool) -> dict[str, int]:
    """The measuring schedules of the checkpoint's readout settings as run."""
    from recon.checkpoint import DEFAULT_CHECKPOINT, read_config

    head = read_config(Path(checkpoint or DEFAULT_CHECKPOINT) / "config.yaml")["model"]["head"]
    out = {}
    if refine and head.get("refine", {}).get("enabled") and head["refine"].get("calibrate"):
        out["calibration"] = int(head["refine"]["focal_every"])
    if revisit and head.get("revisit", {}).get("enabled"):
        out["revisit"] = int(head["revisit"]["measure_every"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a long video / image folder / dataset sequence")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--out", default="bench_run_long.json")
    parser.add_argument("--run-dir", default=None, help="where recon run writes (default: a temp dir)")
    parser.add_argument("--no-revisit", action="store_true",
                        help="recon run --no-revisit (window odometry only)")
    parser.add_argument("--no-refine", action="store_true",
                        help="recon run --no-refine (the camera trunk's window poses, predicted fov)")
    parser.add_argument("--period", type=bounded_int(1), default=None,
                        help="frames of one pass of a looping path: add the same-phase windows")
    args = parser.parse_args()
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench_run_long_"))
    cmd = [sys.executable, "-m", "recon.cli", "run", args.source, "--out", str(run_dir), "--quiet"]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.no_revisit:
        cmd.append("--no-revisit")
    if args.no_refine:
        cmd.append("--no-refine")
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        print(f"recon run failed with exit code {proc.returncode}", file=sys.stderr)
        return proc.returncode
    timing = np.loadtxt(run_dir / "timing.txt", ndmin=2)
    row = {"source": args.source, **summarise(timing, (100, 200), (9900, 10000), 1000)}
    if args.period:
        row.update(same_phase(timing, late_window((9900, 10000), len(timing)), args.period))
    schedules = checkpoint_schedules(args.checkpoint, not args.no_revisit, not args.no_refine)
    if schedules:
        row.update(schedule_classes(timing, (100, 200), late_window((9900, 10000), len(timing)), schedules))
    print(markdown_table([{k: v for k, v in row.items() if not isinstance(v, (list, dict))}]))
    write_json(args.out, "bench_run_long", [row], command=" ".join(cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
