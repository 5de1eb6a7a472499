"""Cost of the window refinement and self-calibration in the model step, side by side.

Streams the same frames through the shipped model in several ``head.refine`` settings, the
settings interleaved frame by frame in one process (each with its own stream state), so a load
that comes and goes on the machine hits all of them alike; reports each setting's median and mean
step latency and its ratio to the step without the refinement. Frames come from a video file (its
frames must already be the model's resolution) or, by default, a synthetic loop rendered here.

    python -m tools.bench.bench_refine --frames 300 --out bench_refine.json
    python -m tools.bench.bench_refine --video /tmp/long10k/seq_000/video.mp4 --frames 300
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from recon.checkpoint import DEFAULT_CHECKPOINT, load_model
from recon.commands.argtypes import bounded_int
from tools.bench.common import markdown_table, write_json

SETTINGS = {
    "off": {"enabled": False},
    "shipped": {},
    "focal_calibration_only": {"calibrate_contrast": False},
    "no_calibration": {"calibrate": False},
    "4_iterations_focal_every_8": {"iterations": 4, "focal_every": 8},
}


def _frames(video: str | None, count: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """``count`` frames [1, 3, H, W] in [0, 1]."""
    if video is None:
        from data.synth.sequence import SynthConfig, synthetic_sequence

        config = SynthConfig(num_frames=count, trajectory="loop", width=size[1], height=size[0])
        seq = synthetic_sequence(config, 0)
        images = [seq[i].image for i in range(count)]
    else:
        import cv2

        cap, images = cv2.VideoCapture(video), []
        while len(images) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not images or images[0].shape[:2] != size:
            got = images[0].shape[:2] if images else "no frames"
            raise SystemExit(f"--video {video}: expected frames of {size[0]}x{size[1]}, got {got}")
    return [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float()[None] / 255 for im in images]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=bounded_int(10), default=300)
    parser.add_argument("--video", default=None,
                        help="a video at the model's resolution (default: a synthetic loop)")
    parser.add_argument("--out", default=None, help="write the rows here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = {}
    for name, options in SETTINGS.items():
        model = load_model(DEFAULT_CHECKPOINT).eval()
        for key, value in options.items():
            setattr(model.cfg.head.refine, key, value)
        model.set_refine(model.cfg.head.refine.enabled)           # the signature follows the settings
        runs[name] = (model, [model.init_state(1)], [])
    frames = _frames(args.video, args.frames, tuple(next(iter(runs.values()))[0].cfg.image_size))
    with torch.inference_mode():
        for frame in frames:
            for model, state, times in runs.values():
                start = time.perf_counter()
                _, state[0] = model.step(frame, state[0])
                times.append((time.perf_counter() - start) * 1000.0)
    base = statistics.median(runs["off"][2][10:])
    rows = [{"setting": name, "frames": len(times) - 10, "median_ms": statistics.median(times[10:]),
             "mean_ms": statistics.fmean(times[10:]), "ratio_to_off": statistics.median(times[10:]) / base}
            for name, (_, _, times) in runs.items()]
    print(markdown_table(rows))
    if args.out:
        given = argv if argv is not None else sys.argv[1:]
        command = " ".join(["python -m tools.bench.bench_refine", *given])
        write_json(args.out, "bench_refine", rows, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
