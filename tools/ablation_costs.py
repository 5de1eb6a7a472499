"""Cost of each memory-ablation arm, side by side in one process: training step, streaming step,
state size.

For every arm of ``configs/ablation/arms.yaml`` a tiny model (the recipe's preset, the arm's memory
type and options, random weights: cost does not depend on them) is measured in interleaved rounds,
so load from other processes hits every arm alike:

- training step: forward + backward of one 48-frame clip at batch 1, the shipped recipe's shape
  (``tools.bench.bench_train_step.step_seconds``; the recipe splits it into 3 truncated-backprop
  segments but one backward spans the clip, as here);
- streaming step: median latency of ``model.step`` on one frame (inference mode), after warm-up,
  over the frames ``--frames`` streams;
- state bytes: ``StreamState.nbytes()`` at the start and after the streamed frames (constant for
  every arm but ``causal_attention``, whose cache grows per frame: the growth per frame is listed).

    python -m tools.ablation_costs --out docs/memory_ablation/costs     # -> costs.json, costs.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from recon.errors import ConfigError
from tools.ablation_arms import ARMS_FILE, load_arms
from tools.bench.bench_train_step import build, step_seconds
from tools.bench.common import markdown_table, write_json

CLIP_FRAMES = 48


def stream_ms(model, frames: torch.Tensor, state):
    """Per-frame latencies (ms) of ``model.step`` over ``frames`` [T, 3, H, W] and the final state."""
    times = []
    with torch.inference_mode():
        for frame in frames:
            t0 = time.perf_counter()
            _, state = model.step(frame[None], state)
            times.append(1000.0 * (time.perf_counter() - t0))
    return times, state


def measure(arms: dict[str, dict], frames: int, repeats: int, rounds: int = 4) -> list[dict]:
    """Rows of the cost table, one per arm (interleaved rounds; medians)."""
    models = {name: build("tiny", arm["type"], arm["options"]) for name, arm in arms.items()}
    H, W = next(iter(models.values())).cfg.image_size
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(1, CLIP_FRAMES, 3, H, W, generator=g)
    video = torch.rand(frames, 3, H, W, generator=g)
    train_s = {name: [] for name in models}
    for model in models.values():                                   # warm-up
        step_seconds(model.train(), clip[:, :8])
    for _ in range(repeats):
        for name, model in models.items():
            train_s[name].append(step_seconds(model.train(), clip))
    step = {name: [] for name in models}
    states = {name: model.eval().init_state(1) for name, model in models.items()}
    start_bytes = {name: states[name].nbytes() for name in models}
    for name, model in models.items():                              # warm-up
        _, states[name] = stream_ms(model, video[:10], states[name])
    per_round = -(-frames // rounds)
    for r in range(rounds):
        chunk = video[r * per_round:(r + 1) * per_round]
        for name, model in models.items():
            times, states[name] = stream_ms(model, chunk, states[name])
            step[name] += times
    rows = []
    base_train, base_step = statistics.median(train_s["none"]), statistics.median(step["none"])
    for name, arm in arms.items():
        seen = states[name].frame_index
        end_bytes = states[name].nbytes()
        t, s = statistics.median(train_s[name]), statistics.median(step[name])
        rows.append({
            "arm": name,
            "memory": arm["type"],
            "parameters": sum(p.numel() for p in models[name].parameters()),
            "train step s (48 frames)": round(t, 3),
            "train vs none": round(t / base_train, 3),
            "stream step ms": round(s, 2),
            "frames/s": round(1000.0 / s, 1),
            "stream vs none": round(s / base_step, 3),
            "state MiB": round(start_bytes[name] / 2**20, 2),
            "state growth KiB/frame": round((end_bytes - start_bytes[name]) / 1024 / max(seen, 1), 2),
            "train_times_s": [round(x, 4) for x in train_s[name]],
        })
    return rows


COLUMNS = ["arm", "memory", "parameters", "train step s (48 frames)", "train vs none", "stream step ms",
           "frames/s", "stream vs none", "state MiB", "state growth KiB/frame"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ablation_costs",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--arms", type=Path, default=ARMS_FILE,
                        help="arms file (default: configs/ablation/arms.yaml)")
    parser.add_argument("--frames", type=int, default=200, help="frames streamed per arm (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="training steps timed per arm (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, help="folder for costs.json and costs.md")
    args = parser.parse_args(argv)
    if args.frames < 10 or args.repeats < 1 or args.threads < 1:
        print("ablation_costs: need --frames >= 10, --repeats >= 1 and --threads >= 1", file=sys.stderr)
        return 2
    try:
        arms = load_arms(args.arms)
    except (ConfigError, OSError) as e:
        print(f"ablation_costs: {e}", file=sys.stderr)
        return 2
    if "none" not in arms:
        print(f"ablation_costs: {args.arms}: the arms need a 'none' arm (the baseline of the ratios)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = measure(arms, args.frames, args.repeats)
    table = markdown_table(rows, columns=COLUMNS)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "costs.json", "ablation_costs", rows, frames=args.frames, repeats=args.repeats,
                   threads=args.threads, clip_frames=CLIP_FRAMES)
        note = (f"Side by side in one process, {args.threads} thread(s): training step = forward + backward "
                f"of a {CLIP_FRAMES}-frame clip at batch 1 (median of {args.repeats}); streaming step = "
                f"median `model.step` latency over {args.frames} frames; state after those frames.\n\n"
                "    python -m tools.ablation_costs --out docs/memory_ablation/costs\n\n")
        (args.out / "costs.md").write_text(f"# Memory ablation: cost per arm\n\n{note}{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
