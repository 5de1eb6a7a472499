"""Benchmark: reduced (linear-attention) elastic / TTT memories vs the sequential LaCT-style TTT layer.

Forward + backward tokens/s of each memory layer on one clip (default 32 frames x 256 tokens,
width 256, 4 heads, fast hidden width 2 x 64), all measured in one run on one device so the ratios
are comparable. The baseline is the paper's: sequential TTT with update of the hidden weights,
Muon (5 Newton-Schulz steps) and weight norm. Also the op level (no projections): ``ttt_sequential``
with the same options vs ``elastic_parallel`` / ``ttt_parallel``.

Usage:
    .venv/bin/python -m tools.bench.bench_ttt --out bench_ttt.json
    .venv/bin/python -m tools.bench.bench_ttt --frames 8 --tokens 64 --repeats 2    # quick

Cases are timed in interleaved rounds (robust to changing load on a shared CPU). Prints a
Markdown table (median time per fwd+bwd, tokens/s, speed-up over the baseline) and
writes the same numbers as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from layers.elastic import ElasticMemory
from layers.ops.elastic import elastic_parallel, elastic_sequential
from layers.ops.ttt import ttt_parallel, ttt_sequential
from layers.ttt import TTTMemory
from tools.bench.common import environment, markdown_table, synchronize, write_json

PLAIN = dict(update_hidden=False, weight_norm=False, muon_steps=0)
BASELINE = "layer: TTT sequential (LaCT: hidden + Muon5 + wnorm)"


def fwd_bwd_seconds(fn: Callable[[], torch.Tensor], params: list[torch.Tensor], device: str) -> float:
    """Seconds for one forward + backward (``fn().square().mean().backward()``)."""
    for p in params:
        p.grad = None
    synchronize(device)
    t0 = time.perf_counter()
    fn().float().square().mean().backward()
    synchronize(device)
    return time.perf_counter() - t0


def time_interleaved(
    cases: list[tuple[str, Callable, list]], repeats: int, device: str
) -> dict[str, list[float]]:
    """One warm-up per case, then ``repeats`` rounds that time every case once, in turn, so a change in
    machine load (shared CPUs) hits all cases alike."""
    for _, fn, params in cases:
        fwd_bwd_seconds(fn, params, device)
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeats):
        for name, fn, params in cases:
            times[name].append(fwd_bwd_seconds(fn, params, device))
    return times


def layer_cases(dim: int, heads: int, hidden_ratio: float) -> dict[str, torch.nn.Module]:
    """The memory layers compared (same width, heads and fast hidden width)."""
    return {
        BASELINE: TTTMemory(dim, heads, hidden_ratio=hidden_ratio),
        "layer: TTT sequential, frozen kernel, plain step": TTTMemory(
            dim, heads, hidden_ratio=hidden_ratio, **PLAIN
        ),
        "layer: elastic FSM sequential (sq, streaming-ema)": ElasticMemory(
            dim, heads, form="sequential", hidden_ratio=hidden_ratio
        ),
        "layer: TTT reduced (parallel)": TTTMemory(
            dim, heads, form="parallel", hidden_ratio=hidden_ratio, **PLAIN
        ),
        "layer: elastic reduced (parallel)": ElasticMemory(dim, heads, hidden_ratio=hidden_ratio),
    }


def op_cases(B: int, T: int, P: int, H: int, K: int, Dh: int, device: str):
    """The ops compared on the same random inputs (float32), with their leaf tensors."""
    g = torch.Generator(device="cpu").manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g).to(device)
    q = torch.nn.functional.normalize(rnd(B, T * P, H, K), dim=-1).requires_grad_(True)
    k = torch.nn.functional.normalize(rnd(B, T * P, H, K), dim=-1).requires_grad_(True)
    v = rnd(B, T * P, H, K).requires_grad_(True)
    eta = (torch.rand(B, T * P, H, generator=g).to(device) * 1e-2).requires_grad_(True)
    w0, w2 = rnd(B, H, K, Dh).requires_grad_(True), rnd(B, H, K, Dh).requires_grad_(True)
    w1 = (rnd(B, H, Dh, K) / Dh**0.5).requires_grad_(True)
    F = torch.full((H, Dh), 0.5, device=device)
    args = (q, k, v, eta, w0, w1, w2, P)
    lact = dict(update_hidden=True, weight_norm=True, muon_steps=5)
    cases = {
        "op: ttt_sequential (hidden + Muon5 + wnorm)": lambda: ttt_sequential(*args, **lact)[0],
        "op: elastic_sequential (static F)": lambda: elastic_sequential(*args, 0.5, F, 0.9),
        "op: ttt_parallel": lambda: ttt_parallel(*args)[0],
        "op: elastic_parallel": lambda: elastic_parallel(*args, 0.5, F, 0.9),
    }
    return cases, [q, k, v, eta, w0, w1, w2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="frames per clip (one update per frame)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per frame")
    parser.add_argument("--dim", type=int, default=256, help="token width")
    parser.add_argument("--heads", type=int, default=4, help="heads")
    parser.add_argument("--hidden-ratio", type=float, default=2.0, help="fast hidden width / head width")
    parser.add_argument("--batch", type=int, default=1, help="clips per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("frames", "tokens", "dim", "heads", "batch", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.dim % args.heads:
        parser.error(f"--dim {args.dim} must be divisible by --heads {args.heads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev, B, T, P = args.device, args.batch, args.frames, args.tokens
    tokens = B * T * P

    x = torch.randn(B, T, P, args.dim, device=dev)
    cases = []
    for name, layer in layer_cases(args.dim, args.heads, args.hidden_ratio).items():
        layer = layer.to(dev)
        cases.append((name, lambda layer=layer: layer(x)[0], list(layer.parameters())))
    K = args.dim // args.heads
    Dh = max(1, round(args.hidden_ratio * K))
    ops, leaves = op_cases(B, T, P, args.heads, K, Dh, dev)
    cases += [(name, fn, leaves) for name, fn in ops.items()]
    rows = [{"case": name, "times_s": t} for name, t in time_interleaved(cases, args.repeats, dev).items()]

    base: dict[str, float] = {}
    for row in rows:
        row["median_ms"] = 1e3 * statistics.median(row["times_s"])
        row["tokens_per_s"] = tokens / (row["median_ms"] / 1e3)
        kind = row["case"].split(":")[0]
        base.setdefault(kind, row["median_ms"])  # the first case of each kind is its baseline
        row["speedup_vs_lact"] = base[kind] / row["median_ms"]

    env = environment()
    print(
        f"fwd+bwd, B={B}, {T} frames x {P} tokens, dim {args.dim}, {args.heads} heads, Dh {Dh}, "
        f"device {dev}, torch {env['torch']}, {env['torch_threads']} threads"
        f", load {env.get('load_average_1m')}"
    )
    print(markdown_table(rows, ["case", "median_ms", "tokens_per_s", "speedup_vs_lact"]))
    if args.out:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        write_json(args.out, "bench_ttt", rows, config={**config, "tokens": tokens, "Dh": Dh})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
