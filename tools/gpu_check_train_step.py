"""One training step of a model preset (forward + backward + AdamW), timed: part of tools/gpu_check.sh.

Builds ``recon.model.build_model(preset)``, feeds a random clip [B, T, 3, H, W] at the preset's image
size (the model applies its own autocast from its config: bf16 on CUDA for the presets), takes a
scalar loss from every floating-point output (``sum of out[k].float().mean()``), backpropagates and
steps AdamW. Reports per clip length: the median step time after warm-up, peak GPU memory, whether
the loss and every gradient are finite, and which parameters got no gradient. Only the public model
API is used (``build_model``, ``model(video)``).

Usage:
    python -m tools.gpu_check_train_step --preset small --device cuda --frames 8 16 --out step.json
    python -m tools.gpu_check_train_step --preset tiny --device cpu --batch 1 --frames 2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scalar_loss(out: dict) -> torch.Tensor:
    """depth.mean() plus the mean of every other floating-point output that carries a gradient."""
    terms = [out["depth"].float().mean()]
    terms += [v.float().mean() for k, v in out.items()
              if k != "depth" and torch.is_tensor(v) and v.is_floating_point() and v.requires_grad]
    return torch.stack(terms).sum()


def one_clip_length(model, opt, batch: int, frames: int, warmup: int, repeats: int,
                    device: torch.device) -> dict:
    H, W = model.cfg.image_size
    g = torch.Generator().manual_seed(frames)
    video = torch.rand(batch, frames, 3, H, W, generator=g).to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, losses, out_dtypes, first = [], [], {}, float("nan")
    grads_finite, missing = True, []
    for i in range(warmup + repeats):
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        out = model(video)
        loss = scalar_loss(out)
        loss.backward()
        if i == warmup + repeats - 1:  # check the gradients of the last step, before the update
            with torch.no_grad():
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                grads_finite = bool(grads) and all(bool(torch.isfinite(x).all()) for x in grads)
                missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            out_dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in out.items() if torch.is_tensor(v)}
        opt.step()
        _sync(device)
        dt = time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if i == 0:
            first = dt
        if i >= warmup:
            times.append(dt)
        del out, loss
    median = statistics.median(times)
    row = {
        "batch": batch,
        "frames": frames,
        "image_size": [H, W],
        "warmup_steps": warmup,
        "timed_steps": len(times),
        "step_ms_median": 1e3 * median,
        "step_ms_min": 1e3 * min(times),
        "step_ms_all": [round(1e3 * t, 3) for t in times],
        "first_step_ms": 1e3 * first,  # includes kernel compilation
        "train_frames_per_s": batch * frames / median,
        "losses": losses,
        "loss_finite": all(math.isfinite(x) for x in losses),
        "grads_finite": grads_finite,
        "params_with_grad": sum(1 for p in model.parameters() if p.grad is not None),
        "params_without_grad": len(missing),
        "params_without_grad_names": missing[:20],
        "output_dtypes": out_dtypes,
    }
    if device.type == "cuda":
        row["peak_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["peak_memory_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="model preset or YAML (default: small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[8], help="clip lengths, one row each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if min(args.frames) < 1 or args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch, --frames and --repeats must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    from recon.model import build_model

    t0 = time.perf_counter()
    model = build_model(args.preset).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    build_s = time.perf_counter() - t0
    rows = []
    for frames in args.frames:
        rows.append(one_clip_length(model, opt, args.batch, frames, args.warmup, args.repeats, device))
        r = rows[-1]
        peak = (f", peak {r['peak_memory_allocated_gib']:.2f} GiB allocated"
                if "peak_memory_allocated_gib" in r else "")
        print(f"{args.preset} B={args.batch} T={frames}: {r['step_ms_median']:.1f} ms/step, "
              f"grads finite {r['grads_finite']}{peak}", flush=True)
    result = {
        "preset": args.preset,
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "autocast": getattr(model.cfg, "autocast", None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_s": build_s,
        "optimizer": f"AdamW(lr={args.lr})",
        "rows": rows,
        "ok": all(r["grads_finite"] and r["loss_finite"] for r in rows),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not result["ok"]:
        print("error: a loss or a gradient is not finite", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
