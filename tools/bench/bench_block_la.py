"""Benchmark: block-causal linear attention, parallel form (and Triton on CUDA) vs the block loop.

Forward + backward time of ``chunk_block_la`` against ``naive_block_la`` on the same inputs, all in
one run on one device so the ratios are comparable. Default cases: the TTT / elastic shape (32
frames x 256 tokens = 32 blocks), and many small blocks (4 tokens, 1 token per block) where the
block loop has thousands of steps. Per-block log-decay in [-1, 0], an initial state, final state
returned; loss = mean(o^2) + mean(S^2).

Usage:
    .venv/bin/python -m tools.bench.bench_block_la --out bench_block_la.json
    .venv/bin/python -m tools.bench.bench_block_la --repeats 1 --heads 2        # quick

Prints a Markdown table (median wall and process-CPU seconds per fwd+bwd, tokens/s, speed-up over
the loop) and writes the same numbers as JSON with ``--out``. On a shared CPU, compare the CPU
column: wall time there mostly measures the other jobs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from layers.ops.block_la import chunk_block_la, naive_block_la

CASES = {  # name: (tokens T, block_size)
    "32 frames x 256 tokens": (8192, 256),
    "512 blocks x 4 tokens": (2048, 4),
    "2048 blocks x 1 token": (2048, 1),
}


def time_fwd_bwd(fn, leaves: list[torch.Tensor], repeats: int, device: str) -> list[tuple[float, float]]:
    """(wall seconds, process CPU seconds) per forward + backward, after one warm-up call.

    CPU seconds (all threads of this process) are much less disturbed than wall time when other
    jobs share the machine; on CUDA only wall time is meaningful.
    """

    def once() -> tuple[float, float]:
        for x in leaves:
            x.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        o, s = fn()
        (o.float().square().mean() + s.square().mean()).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    once()
    return [once() for _ in range(repeats)]


def run_case(T: int, block_size: int, args: argparse.Namespace) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    B, H, K, V = args.batch, args.heads, args.head_dim, args.head_dim
    nb = -(-T // block_size)
    shapes = {"q": (B, T, H, K), "k": (B, T, H, K), "v": (B, T, H, V), "s0": (B, H, K, V)}
    x = {n: torch.randn(s, generator=gen) / (K**0.5 if n == "k" else 1.0) for n, s in shapes.items()}
    x["g"] = -torch.rand(B, nb, H, K, generator=gen)
    leaves = {n: t.to(args.device).requires_grad_() for n, t in x.items()}
    q, k, v, g, s0 = (leaves[n] for n in ("q", "k", "v", "g", "s0"))
    forms = {
        "naive (block loop)": lambda: naive_block_la(q, k, v, g, block_size, 1.0, args.inclusive, s0, True)
    }
    forms["chunk (torch)"] = lambda: chunk_block_la(
        q, k, v, g, block_size, 1.0, args.inclusive, s0, True, backend="torch"
    )
    if args.device == "cuda":
        forms["chunk (triton)"] = lambda: chunk_block_la(
            q, k, v, g, block_size, 1.0, args.inclusive, s0, True, backend="triton"
        )
    rows = []
    for name, fn in forms.items():
        times = time_fwd_bwd(fn, list(leaves.values()), args.repeats, args.device)
        med = statistics.median(t[0] for t in times)
        med_cpu = statistics.median(t[1] for t in times)
        rows.append(
            {
                "form": name,
                "T": T,
                "block_size": block_size,
                "blocks": nb,
                "median_s": med,
                "median_cpu_s": med_cpu,
                "tokens_per_s": B * T / med,
                "times_s": times,
            }
        )
    base, base_cpu = rows[0]["median_s"], rows[0]["median_cpu_s"]
    for r in rows:
        r["speedup_vs_naive"] = base / r["median_s"]
        r["cpu_speedup_vs_naive"] = base_cpu / r["median_cpu_s"]
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64, help="K = V")
    p.add_argument("--inclusive", action="store_true", help="inclusive reading (default strict)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = []
    for case, (T, bs) in CASES.items():
        for r in run_case(T, bs, args):
            results.append({"case": case, **r})
    print(
        f"B={args.batch} H={args.heads} K=V={args.head_dim} {'inclusive' if args.inclusive else 'strict'}"
        f" device={args.device} threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    print("| case | form | wall s (fwd+bwd) | CPU s | tokens/s (wall) | speed-up, wall | speed-up, CPU |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['case']} | {r['form']} | {r['median_s']:.4f} | {r['median_cpu_s']:.4f} |"
            f" {r['tokens_per_s']:.0f} | {r['speedup_vs_naive']:.1f}x | {r['cpu_speedup_vs_naive']:.1f}x |"
        )
    if args.out is not None:
        meta = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.platform(),
            "processor": platform.processor(),
        }
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
