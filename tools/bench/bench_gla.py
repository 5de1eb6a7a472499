"""Benchmark: chunked gated linear attention (torch CPU path) vs the token loop, forward + backward.

Both ``chunk_gla`` (backend ``torch``; also ``triton`` on CUDA) and ``naive_recurrent_gla`` run on the
same inputs in one process, so the speed-up is a ratio measured side by side. Default shape:
B=1, T=4096, H=4, K=V=64, log-decay ``logsigmoid(x) / 16`` (the layer's gate), an initial state
and the final state returned; loss = mean(o^2) + mean(S^2); gradients of q, k, v, g and the
initial state. The outputs of the two forms are compared too (relative RMS of o and of every
gradient), so a fast but wrong form cannot pass unnoticed.

Usage:
    .venv/bin/python -m tools.bench.bench_gla --out bench_gla.json
    .venv/bin/python -m tools.bench.bench_gla --seq-len 1024 --repeats 3      # quicker

Prints a Markdown table (median seconds per forward+backward, tokens/s, speed-up over the loop)
and writes the same numbers (every timed call, the environment) as JSON with ``--out``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from layers.ops.gla import chunk_gla, naive_recurrent_gla
from tools.bench.common import (
    add_linear_attention_arguments,
    apply_threads,
    markdown_table,
    time_call,
    write_json,
)


def make_inputs(B: int, T: int, H: int, K: int, V: int, device: str, seed: int = 0) -> list[torch.Tensor]:
    """q, k (L2-normalised, as in the layer), v, g = logsigmoid / 16, initial state; all leaf tensors."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, H, K, generator=gen)) / 16
    h0 = torch.randn(B, H, K, V, generator=gen) * 0.1
    return [x.to(device).requires_grad_() for x in (q, k, v, g, h0)]


def forward_backward(fn, inputs: list[torch.Tensor], **kwargs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward + backward; returns the output and the gradients of every input."""
    q, k, v, g, h0 = inputs
    o, s = fn(q, k, v, g, initial_state=h0, output_final_state=True, **kwargs)
    loss = o.float().pow(2).mean() + s.pow(2).mean()
    grads = torch.autograd.grad(loss, inputs)
    return o.detach(), [gr.detach() for gr in grads]


def rel_rms(ref: torch.Tensor, x: torch.Tensor) -> float:
    """``||ref - x|| / ||ref||`` in float64."""
    ref, x = ref.double(), x.double()
    return ((ref - x).norm() / ref.norm().clamp_min(1e-300)).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_linear_attention_arguments(parser, repeats=5)
    args = parser.parse_args(argv)
    apply_threads(args.threads)

    B, T, H, K, V = args.batch, args.seq_len, args.heads, args.key_dim, args.value_dim
    inputs = make_inputs(B, T, H, K, V, args.device)
    methods = [("naive_recurrent_gla (token loop)", naive_recurrent_gla, {}, args.loop_repeats)]
    methods.append((f"chunk_gla torch C={args.chunk_size}", chunk_gla,
                    {"chunk_size": args.chunk_size, "backend": "torch"}, args.repeats))
    if args.device.startswith("cuda"):
        methods.append((f"chunk_gla triton C={args.chunk_size}", chunk_gla,
                        {"chunk_size": args.chunk_size, "backend": "triton"}, args.repeats))

    ref: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] = {}
    rows = []
    for name, fn, kwargs, repeats in methods:
        results = []

        def call(fn=fn, kwargs=kwargs, results=results):
            results.append(forward_backward(fn, inputs, **kwargs))

        is_loop = fn is naive_recurrent_gla
        timing = time_call(call, repeats=repeats, warmup=0 if is_loop else 1, device=args.device)
        o, grads = results[-1]
        if is_loop:  # the loop's own (timed) result is the reference
            ref["loop"] = (o, grads)
        ref_o, ref_grads = ref["loop"]
        errors = [rel_rms(ref_o, o)] + [rel_rms(a, b) for a, b in zip(ref_grads, grads, strict=True)]
        rows.append({"method": name, "median_s": timing["median_s"], "min_s": timing["min_s"],
                     "repeats": timing["repeats"], "tokens_per_s": B * T / timing["median_s"],
                     "max_rel_rms_vs_loop": max(errors), "times_s": timing["times_s"]})
    loop_s = rows[0]["median_s"]
    for row in rows:
        row["speedup_vs_loop"] = loop_s / row["median_s"]

    shape = f"B={B} T={T} H={H} K={K} V={V}, fwd+bwd, device={args.device}, threads={torch.get_num_threads()}"
    print(f"GLA forward+backward, {shape}")
    print(markdown_table(rows, ["method", "median_s", "min_s", "repeats", "tokens_per_s", "speedup_vs_loop",
                                "max_rel_rms_vs_loop"]))
    if args.out is not None:
        path = write_json(args.out, "gla", rows, shape={"B": B, "T": T, "H": H, "K": K, "V": V},
                          chunk_size=args.chunk_size, device=args.device)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
