"""Training-step cost of each long-range memory type: forward + backward of a model preset on a clip.

The memory ablation (docs/memory_ablation.md) trains one tiny model per memory type; their wall
times depend on what else ran on the machine. This measures the step cost side by side in one
process (interleaved rounds, median), by default on batch 2 of 8-frame clips; the shipped recipe's
shape is ``--batch 1 --frames 48``; ``--dense-every 1 2`` also times the training option
``model.train_dense_every`` (dense head on every k-th frame):

    python -m tools.bench.bench_train_step --threads 1 --out bench_train_step.json

Parameters and the memory layers' share of them are listed too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from layers.registry import MEMORY_TYPES
from tools.bench.common import markdown_table, write_json


def build(preset: str, memory: str, options: dict | None = None):
    """A randomly initialised (seed 0) model of the preset with that memory and options (train mode)."""
    from recon.model import build_model, load_model_config

    torch.manual_seed(0)
    return build_model(load_model_config(preset, memory={"type": memory, "options": options or {}})).train()


def step_seconds(model, video: torch.Tensor, dense_every: int = 1) -> float:
    """One forward + backward (a scalar of every output head) and the time it took; with
    ``dense_every > 1`` the dense head runs on every k-th frame only (the training option)."""
    for p in model.parameters():
        p.grad = None
    t0 = time.perf_counter()
    dense = None if dense_every == 1 else torch.arange(0, video.shape[1], dense_every)
    out, _ = model.run(video, model.init_state(video.shape[0]), dense_frames=dense)
    loss = sum(v.float().mean() for v in out.values() if torch.is_tensor(v) and v.requires_grad)
    loss.backward()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--memory", nargs="+", default=list(MEMORY_TYPES), choices=list(MEMORY_TYPES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dense-every", type=int, nargs="+", default=[1],
                        help="also time the training option model.train_dense_every (one row per value)")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {m: build(args.preset, m) for m in args.memory}
    H, W = next(iter(models.values())).cfg.image_size
    video = torch.rand(args.batch, args.frames, 3, H, W, generator=torch.Generator().manual_seed(0))
    arms = [(m, k) for m in models for k in args.dense_every]
    for m, k in arms:  # warm-up
        step_seconds(models[m], video, k)
    times = {arm: [] for arm in arms}
    for _ in range(args.repeats):  # interleaved: load changes hit every arm alike
        for m, k in arms:
            times[(m, k)].append(step_seconds(models[m], video, k))
    base = {k: statistics.median(times[("none", k)]) for k in args.dense_every if ("none", k) in times}
    full = {m: statistics.median(times[(m, 1)]) for m in models if (m, 1) in times}
    rows = []
    for m, k in arms:
        model = models[m]
        total = sum(p.numel() for p in model.parameters())
        memory = sum(p.numel() for n, p in model.named_parameters() if ".memory_blocks." in n)
        median = statistics.median(times[(m, k)])
        rows.append({
            "memory": m,
            "dense every": k,
            "parameters": total,
            "memory-layer parameters": memory,
            "median step ms": round(1000 * median, 1),
            "frames/s": round(args.batch * args.frames / median, 2),
            "vs none": round(median / base[k], 3) if k in base else None,
            "speed-up vs dense every 1": round(full[m] / median, 3) if m in full else None,
            "times_s": [round(t, 4) for t in times[(m, k)]],
        })
    columns = ["memory", "dense every", "parameters", "memory-layer parameters", "median step ms", "frames/s",
               "vs none", "speed-up vs dense every 1"]
    print(markdown_table(rows, columns=columns))
    if args.out:
        write_json(args.out, "train_step", rows, preset=args.preset, batch=args.batch, frames=args.frames,
                   threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
