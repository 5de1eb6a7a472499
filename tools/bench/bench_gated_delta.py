"""Benchmark: the gated delta rule, forward + backward: chunked form vs the token loop, and vs a peer.

Two tables, every method on the same inputs in one process (ratios measured side by side):

1. ``chunked``: ``chunk_gated_delta`` (torch, hand-written backward; also autograd through the same
   forward, and the Triton kernels on CUDA) vs ``naive_recurrent_gated_delta`` (the reference loop;
   ``--no-loop`` leaves it out), with the layer's per-channel decay ``g = logsigmoid(x) / 16``.
2. ``peer``: against ``transformers``' ``torch_chunk_gated_delta_rule`` (Qwen3-Next's torch path; the
   ``bench`` extra), with a per-head decay ``g [B, T, H]``: ours takes it as is (the per-head fast
   path) and broadcast to the key channels (the per-channel path, what the layer runs). Forward and
   forward + backward times, speed relative to the peer, and the largest relative RMS difference to
   the peer over the output, the final state and every gradient.

Default shape B=1, T=4096, H=4, K=V=64, unit q and k, beta uniform in [0, 1], an initial state in and
the final state out; loss = mean(o^2) + mean(S^2); gradients of q, k, v, g, beta and the initial
state. Methods are timed round-robin (one call of each per round) so that a slow spell of a shared
machine hits all of them alike; medians are reported.

Usage:
    .venv/bin/python -m tools.bench.bench_gated_delta --threads 1 --out docs/bench_gated_delta.json
    .venv/bin/python -m tools.bench.bench_gated_delta --seq-len 1024 --repeats 3 --no-loop   # quicker
    .venv/bin/python -m tools.bench.bench_gated_delta --device cuda --no-loop               # + Triton
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from layers.ops.gated_delta import chunk_gated_delta, naive_recurrent_gated_delta
from layers.ops.gated_delta.chunk import torch_chunk_gated_delta
from tools.bench.bench_gla import rel_rms
from tools.bench.common import (
    add_linear_attention_arguments,
    apply_threads,
    markdown_table,
    synchronize,
    write_json,
)


def make_inputs(B: int, T: int, H: int, K: int, V: int, device: str, per_head: bool, seed: int = 0):
    """q, k (unit), v, g (logsigmoid / 16; [B, T, H] per head or [B, T, H, K]), beta, initial state."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, H, *(() if per_head else (K,)), generator=gen)) / 16
    beta = torch.rand(B, T, H, generator=gen)
    h0 = torch.randn(B, H, K, V, generator=gen) * 0.1
    return [x.to(device) for x in (q, k, v, g, beta, h0)]


def ours(backend: str, chunk_size: int, broadcast: bool = False, autograd: bool = False):
    """Our op as ``fn(q, k, v, g, beta, h0) -> (o, S)``; ``broadcast``: a per-head g expanded to K."""
    def fn(q, k, v, g, beta, h0):
        if broadcast:
            g = g.unsqueeze(-1).expand(q.shape)
        if autograd:
            return torch_chunk_gated_delta(q, k, v, g, beta, q.shape[-1] ** -0.5, h0, True, chunk_size,
                                           autograd=True)
        return chunk_gated_delta(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                 chunk_size=chunk_size, backend=backend)
    return fn


def loop(q, k, v, g, beta, h0):
    return naive_recurrent_gated_delta(q, k, v, g, beta, initial_state=h0, output_final_state=True)


def peer(chunk_size: int):
    """transformers' torch_chunk_gated_delta_rule (per-head g only), or None when not installed."""
    try:
        from transformers.models.qwen3_next.modeling_qwen3_next import torch_chunk_gated_delta_rule
    except ImportError:
        return None

    def fn(q, k, v, g, beta, h0):
        return torch_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=chunk_size, initial_state=h0,
                                            output_final_state=True)
    return fn


def run_once(fn, inputs, device):
    """(forward seconds, forward + backward seconds, [o, S, grads...])."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    synchronize(device)
    start = time.perf_counter()
    o, s = fn(*leaves)
    synchronize(device)
    t_fwd = time.perf_counter() - start
    loss = o.float().pow(2).mean() + s.float().pow(2).mean()
    grads = torch.autograd.grad(loss, leaves)
    synchronize(device)
    t_all = time.perf_counter() - start
    return t_fwd, t_all, [o.detach(), s.detach()] + [x.detach() for x in grads]


def measure(methods, inputs, repeats, device, reference):
    """Round-robin timing; rows with medians and the largest relative RMS to ``reference``'s result."""
    times = {name: ([], []) for name, _, _ in methods}
    results = {}
    for name, fn, _ in methods:  # warm-up (compilation, allocator) of every fast form
        if fn is not loop:
            results[name] = run_once(fn, inputs, device)[2]
    for r in range(max(n for _, _, n in methods)):
        for name, fn, n in methods:
            if r < n:
                t_fwd, t_all, res = run_once(fn, inputs, device)
                times[name][0].append(t_fwd)
                times[name][1].append(t_all)
                results[name] = res
    rows = []
    for name, _, _ in methods:
        fwd, full = times[name]
        errors = [rel_rms(a, b) for a, b in zip(results[reference], results[name], strict=True)]
        rows.append({"method": name, "fwd_s": statistics.median(fwd), "fwd_bwd_s": statistics.median(full),
                     "min_fwd_bwd_s": min(full), "repeats": len(full), "max_rel_rms_vs_ref": max(errors),
                     "rel_rms_o": errors[0], "times_fwd_bwd_s": full, "times_fwd_s": fwd})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_linear_attention_arguments(parser, repeats=7)
    parser.add_argument("--no-loop", action="store_true", help="leave the token loop out (it takes a while)")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    B, T, H, K, V, C = args.batch, args.seq_len, args.heads, args.key_dim, args.value_dim, args.chunk_size
    cuda = args.device.startswith("cuda")
    shape = (f"B={B} T={T} H={H} K={K} V={V} C={C}, fwd+bwd, device={args.device},"
             f" threads={torch.get_num_threads()}")
    columns = ["method", "fwd_s", "fwd_bwd_s", "min_fwd_bwd_s", "repeats"]
    tables = {}

    inputs = make_inputs(B, T, H, K, V, args.device, per_head=False)
    methods = [] if args.no_loop else [("naive_recurrent_gated_delta (token loop)", loop, args.loop_repeats)]
    methods += [("chunk_gated_delta torch, per-channel g", ours("torch", C), args.repeats),
                ("chunk_gated_delta torch, per-channel g, autograd backward", ours("torch", C, autograd=True),
                 args.repeats)]
    if cuda:
        methods.append(("chunk_gated_delta triton, per-channel g", ours("triton", C), args.repeats))
    rows = measure(methods, inputs, args.repeats, args.device, reference=methods[0][0])
    for row in rows:
        row["speedup_vs_first"] = rows[0]["fwd_bwd_s"] / row["fwd_bwd_s"]
    tables["chunked"] = rows
    print(f"Gated delta rule, per-channel decay, {shape} (speed-up and error vs the first row)")
    print(markdown_table(rows, columns + ["speedup_vs_first", "max_rel_rms_vs_ref"]))

    peer_fn = peer(C)
    if peer_fn is None:
        print("peer table skipped: transformers is not installed (pip install -e '.[bench]')")
    else:
        inputs = make_inputs(B, T, H, K, V, args.device, per_head=True)
        name_peer = "transformers torch_chunk_gated_delta_rule (peer)"
        methods = [(name_peer, peer_fn, args.repeats),
                   ("chunk_gated_delta torch, per-head g", ours("torch", C), args.repeats),
                   ("chunk_gated_delta torch, per-head g broadcast to K (per-channel path)",
                    ours("torch", C, broadcast=True), args.repeats)]
        if cuda:
            methods += [("chunk_gated_delta triton, per-head g", ours("triton", C), args.repeats),
                        ("chunk_gated_delta triton, per-head g broadcast to K",
                         ours("triton", C, broadcast=True), args.repeats)]
        rows = measure(methods, inputs, args.repeats, args.device, reference=name_peer)
        for row in rows:
            row["speed_vs_peer_fwd"] = rows[0]["fwd_s"] / row["fwd_s"]
            row["speed_vs_peer_fwd_bwd"] = rows[0]["fwd_bwd_s"] / row["fwd_bwd_s"]
        per_head_s = rows[1]["fwd_bwd_s"]
        for row in rows[1:]:
            row["cost_vs_per_head"] = row["fwd_bwd_s"] / per_head_s
        tables["peer"] = rows
        print(f"\nGated delta rule vs transformers' torch_chunk_gated_delta_rule, per-head decay, {shape}")
        print(markdown_table(rows, columns + ["speed_vs_peer_fwd", "speed_vs_peer_fwd_bwd",
                                              "cost_vs_per_head", "max_rel_rms_vs_ref"]))
    if args.out is not None:
        try:
            import transformers
            peer_version = transformers.__version__
        except ImportError:
            peer_version = None
        rows = [dict(row, table=name) for name, table in tables.items() for row in table]
        path = write_json(args.out, "gated_delta", rows, shape={"B": B, "T": T, "H": H, "K": K, "V": V},
                          chunk_size=C, device=args.device, transformers=peer_version)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
