"""Streaming flatness measured side by side: the late frames and the early frames timed interleaved.

The quality bar compares the median model-step latency of frames 9,900-10,000 with that of frames
100-200 of one stream (``tools/bench/bench_run_long.py`` measures it as ``recon run`` does). On a
shared or virtual CPU the two windows are timed some eight minutes apart, and the speed of the
machine itself moves by several percent over that time, so the ratio mixes the model's growth
with the machine's drift. This benchmark removes the drift: two streams of the same source run in
one process through one model,

- the *late* stream is stepped untimed to frame ``late[0]`` (9,900),
- the *early* stream is stepped untimed to frame ``early[0]`` (100),

then their next ``late[1] - late[0]`` frames are stepped alternately (early, late, early, ...),
each step timed (wall and thread CPU time, ``StreamSession.step``: the model step and the copy of
its outputs to the host, as in ``recon run``'s ``timing.txt``). Both windows then see the same
machine, so ``flatness`` (late median over early median) measures what the late frames do more,
not when they ran. ``schedule_classes`` splits both windows by the scheduled work of each frame
(self-calibration every ``focal_every``-th frame, revisit measurement every ``measure_every``-th),
as ``bench_run_long`` does.

    recon synth /tmp/long10k --frames 10000 --trajectory loop --no-shadows
    python -m tools.bench.bench_flatness_paired /tmp/long10k/seq_000/video.mp4 --out flatness_paired.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tools.bench.bench_run_long import checkpoint_schedules, schedule_classes
from tools.bench.common import markdown_table, write_json


def _window(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    if not (lo.isdigit() and hi.isdigit() and int(lo) < int(hi)):
        raise argparse.ArgumentTypeError(f"expected a frame window FIRST-END with FIRST < END, got {text!r}")
    return int(lo), int(hi)


def paired_timing(source: str, checkpoint: str | None, early: tuple[int, int], late: tuple[int, int],
                  revisit: bool, refine: bool, progress: bool = True) -> dict[str, np.ndarray]:
    """Per-frame timings of the windows ``early`` and ``late`` of ``source``, stepped interleaved.

    Returns:
        {"early": rows, "late": rows}, each [n, 4] ``frame latency_ms cpu_ms order`` (``order``:
        the position of the step in the interleaved sequence, so the pairs can be matched).
    """
    import torch

    from recon.checkpoint import DEFAULT_CHECKPOINT, load_model
    from recon.infer.sources import FrameStream, open_source
    from recon.infer.stream import StreamSession

    size = late[1] - late[0]
    if early[1] - early[0] != size:
        raise ValueError(f"--early {early} and --late {late}: the windows must have the same length")
    torch.set_num_threads(1)
    model = load_model(checkpoint or DEFAULT_CHECKPOINT)
    model.set_revisit(revisit)
    model.set_refine(refine)

    def frames(stop: int):
        stream = FrameStream(open_source(source), tuple(model.cfg.image_size), max_frames=stop)
        if len(stream) < stop:
            raise ValueError(f"{source}: {len(stream)} frames, the window needs {stop}")
        return iter(stream)

    streams = {"early": (StreamSession(model), frames(early[1]), early[0]),
               "late": (StreamSession(model), frames(late[1]), late[0])}
    for name, (session, it, start) in streams.items():
        t0 = time.monotonic()
        for i in range(start):
            session.step(next(it))
            if progress and i % 1000 == 999:
                print(f"{name}: {i + 1}/{start} frames untimed ({time.monotonic() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    rows = {"early": [], "late": []}
    for k in range(size):
        for j, name in enumerate(("early", "late")):
            session, it, start = streams[name]
            pred = session.step(next(it))
            rows[name].append((start + k, pred.latency_ms, pred.cpu_ms, 2 * k + j))
    return {name: np.array(r, dtype=np.float64) for name, r in rows.items()}


def summarise_paired(timing: dict[str, np.ndarray], schedules: dict[str, int]) -> dict:
    """Flatness of the interleaved windows: medians, their ratios, and the schedule classes."""
    early, late = timing["early"], timing["late"]
    out = {
        "window_low": f"{int(early[0, 0])}-{int(early[-1, 0]) + 1}",
        "window_high": f"{int(late[0, 0])}-{int(late[-1, 0]) + 1}",
        "median_latency_ms_low": float(np.median(early[:, 1])),
        "median_latency_ms_high": float(np.median(late[:, 1])),
        "flatness": float(np.median(late[:, 1]) / np.median(early[:, 1])),
        "cpu_flatness": float(np.median(late[:, 2]) / np.median(early[:, 2])),
        "mean_flatness": float(late[:, 1].mean() / early[:, 1].mean()),
    }
    if schedules:
        both = np.concatenate((early, late))[:, :2]
        n = len(early)
        out.update(schedule_classes(both, (0, n), (n, 2 * n), schedules))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a long video / image folder / dataset sequence")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--early", type=_window, default=(100, 200),
                        help="frames FIRST-END (default 100-200)")
    parser.add_argument("--late", type=_window, default=(9900, 10000),
                        help="frames FIRST-END (default 9900-10000)")
    parser.add_argument("--no-revisit", action="store_true", help="window odometry only")
    parser.add_argument("--no-refine", action="store_true", help="no window refinement / self-calibration")
    parser.add_argument("--out", default="bench_flatness_paired.json")
    args = parser.parse_args()
    if not Path(args.source).exists():
        print(f"{args.source}: no such video / folder", file=sys.stderr)
        return 2
    try:
        timing = paired_timing(args.source, args.checkpoint, args.early, args.late,
                               not args.no_revisit, not args.no_refine)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    schedules = checkpoint_schedules(args.checkpoint, not args.no_revisit, not args.no_refine)
    row = {"source": args.source, **summarise_paired(timing, schedules)}
    row["per_frame"] = {name: t[:, :3].round(3).tolist() for name, t in timing.items()}
    print(markdown_table([{k: v for k, v in row.items() if not isinstance(v, (list, dict))}]))
    write_json(args.out, "bench_flatness_paired", [row], command=" ".join(sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
