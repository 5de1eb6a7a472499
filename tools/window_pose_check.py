"""Has the pose readout learned? Window-pose error of a checkpoint against the no-motion prediction.

For held-out synthetic sequences (seeds never used in training), the model's slot poses
``window_cam2world[t, k]`` (frame t in the camera of frame t - d, d the slot's offset: the window's
1 .. S then any long slots; every pair with t - d >= 0) are compared with the ground truth
``inv(cam2world[t - d]) @ cam2world[t]``:

- rotation: mean geodesic angle (radians), against the identity's (a camera that does not turn);
- translation: mean distance after dividing each side by its mean depth (the training loss's
  normalisation), against the zero translation's.

A ratio below 1 means the readout predicts motion better than predicting none (printed per
sequence, their mean, and the ratio of the mean errors, which a sequence that barely moves does
not dominate); the training losses on one random clip are too noisy to tell. Also printed: the
predicted / true mean depth (metric scale), and the pooled ratios of each slot offset on its own
(``per_offset``): a long slot (no pair flow, no local-window key that far back) that beats no
motion has carried frame t - d through the memory. ``--memory-horizon N`` streams the frames with
the memory emptied every N frames (:class:`recon.eval.memory_horizon.MemoryHorizon`): a long slot
whose ratio rises toward 1 under it read its pose from the memory.

    python tools/window_pose_check.py --checkpoint recon/assets/checkpoints/tiny --out check.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from data.synth import SynthConfig, synthetic_sequence
from recon.checkpoint import DEFAULT_CHECKPOINT, load_model
from recon.errors import ReconError
from recon.eval.memory_horizon import MemoryHorizon
from recon.files import atomic_write
from recon.geometry import rotation_geodesic
from recon.train.losses import mean_depth, window_pairs_gt


def _stream(model, video: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
    """The step loop over video [1, T, 3, H, W] with the memory emptied every ``horizon`` frames."""
    streamed = MemoryHorizon(model, horizon)
    state, outs = streamed.init_state(1, video.device), []
    for t in range(video.shape[1]):
        out, state = streamed.step(video[:, t], state)
        outs.append(out)
    return {k: torch.stack([o[k] for o in outs], 1) for k in ("window_cam2world", "depth")}


@torch.no_grad()
def check_sequence(model, seed: int, num_frames: int, stride: int, horizon: int | None = None) -> dict:
    H, W = model.cfg.image_size
    config = SynthConfig(height=H, width=W, num_frames=num_frames * stride, num_dynamic=1)
    seq = synthetic_sequence(config, seed)
    frames = [seq[i] for i in range(0, num_frames * stride, stride)]
    video = torch.from_numpy(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).float()[None] / 255.0
    gt = torch.from_numpy(np.stack([f.cam2world for f in frames])).float()[None]
    depth = torch.from_numpy(np.stack([f.depth for f in frames]))[None]
    out = model(video) if horizon is None else _stream(model, video, horizon)
    rel, valid = window_pairs_gt(gt, None, model.slot_offsets)
    pred = out["window_cam2world"]
    valid_depth = depth > 0
    s_gt, s_pred = mean_depth(depth, valid_depth), mean_depth(out["depth"], valid_depth)
    identity = torch.eye(3).expand_as(rel[..., :3, :3])
    errors = {"rotation": rotation_geodesic(pred[..., :3, :3], rel[..., :3, :3])[0],         # [T, P]
              "rotation_no_motion": rotation_geodesic(identity, rel[..., :3, :3])[0],
              "translation": (pred[..., :3, 3] / s_pred - rel[..., :3, 3] / s_gt).norm(dim=-1)[0],
              "translation_no_motion": (rel[..., :3, 3] / s_gt).norm(dim=-1)[0]}
    rot, rot0, trans, trans0 = (float(e[valid].mean()) for e in errors.values())
    # per slot offset: the summed errors and pair counts, pooled over sequences by main()
    per_offset = {str(d): {"pairs": int(valid[:, k].sum()),
                           **{name: float(e[:, k][valid[:, k]].sum()) for name, e in errors.items()}}
                  for k, d in enumerate(model.slot_offsets)}
    return {"seed": seed, "rotation": rot, "rotation_no_motion": rot0,
            "translation": trans, "translation_no_motion": trans0,
            "rotation_ratio": rot / rot0, "translation_ratio": trans / trans0,
            "depth_scale_ratio": float(s_pred / s_gt), "per_offset": per_offset}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--first-seed", type=int, default=5000)
    parser.add_argument("--num-sequences", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=48)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--memory-horizon", type=int, default=None,
                        help="stream with the memory emptied every N frames (a diagnostic)")
    parser.add_argument("--out", default=None, help="JSON report")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.checkpoint)
        if args.memory_horizon is not None:
            MemoryHorizon(model, args.memory_horizon)   # refuses a horizon < 1
    except ReconError as e:
        print(f"window_pose_check: {e}", file=sys.stderr)
        return 2
    rows = [check_sequence(model, s, args.num_frames, args.stride, args.memory_horizon)
            for s in range(args.first_seed, args.first_seed + args.num_sequences)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("seed", "per_offset")}
    per_offset = {}
    for d in rows[0]["per_offset"]:
        total = {k: sum(r["per_offset"][d][k] for r in rows) for k in rows[0]["per_offset"][d]}
        per_offset[d] = {"pairs": total["pairs"],
                         **{f"{part}_pooled_ratio": total[part] / total[f"{part}_no_motion"]
                            if total[f"{part}_no_motion"] > 0 else float("nan")
                            for part in ("rotation", "translation")}}
    # ratios of the mean errors (a sequence that barely moves does not dominate them)
    pooled = {f"{part}_pooled_ratio": mean[part] / mean[f"{part}_no_motion"]
              for part in ("rotation", "translation")}
    print("| seed | rotation, rad (no motion) | ratio | translation / mean depth (no motion) | ratio "
          "| depth scale |")
    print("|---|---|---|---|---|---|")
    for r in [*rows, {"seed": "mean", **mean}]:
        print(f"| {r['seed']} | {r['rotation']:.4f} ({r['rotation_no_motion']:.4f}) "
              f"| {r['rotation_ratio']:.3f} "
              f"| {r['translation']:.4f} ({r['translation_no_motion']:.4f}) | {r['translation_ratio']:.3f} "
              f"| {r['depth_scale_ratio']:.3f} |")
    print(f"ratio of the mean errors: rotation {pooled['rotation_pooled_ratio']:.3f}, "
          f"translation {pooled['translation_pooled_ratio']:.3f}")
    print("per slot offset (pooled ratios): " + ", ".join(
        f"{d}: rot {v['rotation_pooled_ratio']:.3f} trans {v['translation_pooled_ratio']:.3f} "
        f"({v['pairs']} pairs)" for d, v in per_offset.items()))
    if args.out:
        text = json.dumps({"checkpoint": args.checkpoint, "settings": vars(args), "mean": mean,
                           "pooled": pooled, "per_offset": per_offset, "per_sequence": rows}, indent=2)
        atomic_write(Path(args.out), lambda tmp: tmp.write_text(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
