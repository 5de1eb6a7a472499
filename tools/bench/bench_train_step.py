"""Training-step cost of each long-range memory type: forward + backward of a model preset on a clip.

The memory ablation (docs/memory_ablation.md) trains one tiny model per memory type; their wall
times depend on what else ran on the machine. This measures the step cost side by side in one
process (interleaved rounds, median), on the training recipe's shape (batch 2, 8-frame clips):

    python tools/bench/bench_train_step.py --threads 1 --out bench_train_step.json

Parameters and the memory layers' share of them are listed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without install

import torch  # noqa: E402

from tools.bench.common import markdown_table, write_json  # noqa: E402

MEMORY_TYPES = ("none", "gla", "elastic", "ttt", "causal_attention")


def build(preset: str, memory: str):
    from recon.model import build_model, load_model_config

    torch.manual_seed(0)
    return build_model(load_model_config(preset, memory={"type": memory})).train()


def step_seconds(model, video: torch.Tensor) -> float:
    """One forward + backward (a scalar of every output head) and the time it took."""
    for p in model.parameters():
        p.grad = None
    t0 = time.perf_counter()
    out = model(video)
    loss = sum(v.float().mean() for v in out.values() if torch.is_tensor(v) and v.requires_grad)
    loss.backward()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--memory", nargs="+", default=list(MEMORY_TYPES), choices=MEMORY_TYPES)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {m: build(args.preset, m) for m in args.memory}
    H, W = next(iter(models.values())).cfg.image_size
    video = torch.rand(args.batch, args.frames, 3, H, W, generator=torch.Generator().manual_seed(0))
    for model in models.values():  # warm-up
        step_seconds(model, video)
    times = {m: [] for m in models}
    for _ in range(args.repeats):  # interleaved: load changes hit every type alike
        for m, model in models.items():
            times[m].append(step_seconds(model, video))
    base = statistics.median(times["none"]) if "none" in times else None
    rows = []
    for m, model in models.items():
        total = sum(p.numel() for p in model.parameters())
        memory = sum(p.numel() for n, p in model.named_parameters() if ".memory_blocks." in n)
        median = statistics.median(times[m])
        rows.append({
            "memory": m,
            "parameters": total,
            "memory-layer parameters": memory,
            "median step ms": round(1000 * median, 1),
            "frames/s": round(args.batch * args.frames / median, 2),
            "vs none": round(median / base, 3) if base else None,
            "times_s": [round(t, 4) for t in times[m]],
        })
    print(markdown_table(rows, columns=["memory", "parameters", "memory-layer parameters", "median step ms",
                                        "frames/s", "vs none"]))
    if args.out:
        write_json(args.out, "train_step", rows, preset=args.preset, batch=args.batch, frames=args.frames,
                   threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
