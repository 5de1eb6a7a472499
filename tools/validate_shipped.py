"""Validation report of a checkpoint on held-out synthetic sequences, next to two baselines.

For each held-out sequence (synthetic seeds never used in training; 96x128, one moving object):

- ``trained``: the checkpoint, run over the whole sequence (model.forward == streaming step loop);
- ``untrained``: the same architecture freshly initialised (torch seed 0);
- ``constant depth``: every frame predicts one constant depth (after the per-frame median scaling
  of the metric, this is the per-frame median of the ground truth); it predicts no motion, so its
  ATE is that of a static camera: after the best Sim(3) alignment a trajectory collapsed to one
  point sits at the centroid of the true camera centres, giving ATE = RMS distance of the true
  centres from their centroid (closed form, ``recon.eval.pose_metrics.static_camera_ate``);
- ``constant velocity``: pose only, the first ground-truth step repeated
  (``recon.eval.pose_metrics.constant_velocity_ate``).

The Sim(3) scale of each model's alignment is reported too (1 = metric scale learned).

Metrics (recon.eval): depth AbsRel and delta < 1.25 with per-frame median scaling, ATE RMSE (metres)
after Sim(3) Umeyama alignment; the means over sequences are reported.

    python tools/validate_shipped.py --checkpoint recon/assets/checkpoints/tiny --out report.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data.synth import SynthConfig, synthetic_sequence
from recon.checkpoint import DEFAULT_CHECKPOINT, load_model
from recon.eval import constant_velocity_ate, depth_metrics, pose_metrics, static_camera_ate
from recon.model import build_model

METHODS = ("trained", "untrained", "constant depth")
NAN = float("nan")


def load_clip(seed: int, num_frames: int, height: int, width: int, num_dynamic: int) -> dict:
    """A held-out synthetic sequence as tensors: video [T,3,H,W], depth [T,H,W], K, cam2world [T,4,4]."""
    seq = synthetic_sequence(
        SynthConfig(num_frames=num_frames, width=width, height=height, num_dynamic=num_dynamic), seed
    )
    frames = [seq[i] for i in range(len(seq))]
    return {
        "video": torch.from_numpy(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).float()
        / 255.0,
        "depth": torch.from_numpy(np.stack([f.depth for f in frames])),
        "cam2world": torch.from_numpy(np.stack([f.cam2world for f in frames])),
    }


@torch.no_grad()
def evaluate(model: torch.nn.Module, clip: dict) -> dict:
    out = model(clip["video"][None])
    d = depth_metrics(out["depth"][0], clip["depth"], align="median")
    p = pose_metrics(out["cam2world"][0].double(), clip["cam2world"].double(), align="sim3")
    return {"abs_rel": d.abs_rel, "delta1": d.delta1, "ate": p.ate_rmse, "sim3_scale": p.scale,
            "constant_velocity_ate": constant_velocity_ate(clip["cam2world"].double(), "sim3")}


def evaluate_constant(clip: dict) -> dict:
    d = depth_metrics(torch.ones_like(clip["depth"]), clip["depth"], align="median")
    ate = static_camera_ate(clip["cam2world"].double(), "sim3")
    return {"abs_rel": d.abs_rel, "delta1": d.delta1, "ate": ate, "sim3_scale": NAN,
            "constant_velocity_ate": constant_velocity_ate(clip["cam2world"].double(), "sim3")}


def markdown(summary: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Held-out synthetic sequences: seeds {args.first_seed}..{args.first_seed + args.num_sequences - 1}, "
        f"{args.num_frames} frames each, {args.num_dynamic} moving object(s); means over sequences.",
        "",
        "| method | depth AbsRel (lower better) | delta < 1.25 (higher better) | ATE RMSE, m (Sim(3)) "
        "| Sim(3) scale |",
        "|---|---|---|---|---|",
    ]
    for name in METHODS:
        m = summary[name]
        ate = f"{m['ate']:.4f}" + (" (static camera)" if name == "constant depth" else "")
        scale = "-" if np.isnan(m["sim3_scale"]) else f"{m['sim3_scale']:.3f}"
        lines.append(f"| {name} | {m['abs_rel']:.4f} | {m['delta1']:.4f} | {ate} | {scale} |")
    cv = summary["constant depth"]["constant_velocity_ate"]
    lines.append(f"| constant velocity (ground-truth first step, pose only) | - | - | {cv:.4f} | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="exported folder or .ckpt")
    parser.add_argument("--num-sequences", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--num-dynamic", type=int, default=1)
    parser.add_argument(
        "--first-seed", type=int, default=5000, help="held out: training uses 0..47, val 1000.."
    )
    parser.add_argument("--out", default=None, help="write the report as JSON here (and .md beside it)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    trained = load_model(args.checkpoint)
    untrained = build_model(trained.cfg).eval()
    H, W = trained.cfg.image_size
    per_seq: dict[str, list[dict]] = {name: [] for name in METHODS}
    start = time.time()
    for seed in range(args.first_seed, args.first_seed + args.num_sequences):
        clip = load_clip(seed, args.num_frames, H, W, args.num_dynamic)
        per_seq["trained"].append(evaluate(trained, clip))
        per_seq["untrained"].append(evaluate(untrained, clip))
        per_seq["constant depth"].append(evaluate_constant(clip))
        print(
            f"seed {seed}: "
            + ", ".join(
                f"{k} AbsRel {v[-1]['abs_rel']:.3f} ATE {v[-1]['ate']:.3f}" for k, v in per_seq.items()
            ),
            file=sys.stderr,
        )
    summary = {
        name: {k: float(np.mean([r[k] for r in rows]))
               for k in ("abs_rel", "delta1", "ate", "sim3_scale", "constant_velocity_ate")}
        for name, rows in per_seq.items()
    }
    report = {
        "checkpoint": str(args.checkpoint),
        "settings": vars(args),
        "summary": summary,
        "per_sequence": per_seq,
        "seconds": round(time.time() - start, 1),
        "command": "python tools/validate_shipped.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    table = markdown(summary, args)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
