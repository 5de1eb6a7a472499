"""Does the pair motion encoder measure motion in scenes it has not seen? A quick probe.

The encoder (``recon.model.motion_encoder.PairMotionEncoder``) and a small MLP alone are trained
to regress the relative pose of synthetic frame pairs (frame t in the camera of frame t - j,
j = 1..7, stride 1-3): rotation as a rotation vector, translation divided by the earlier frame's
mean depth, with the ground-truth focal length (over the width) as an extra input. Training uses
``--train-scenes`` scenes of 24 frames, testing 32 held-out scenes (seeds 5000+). Printed: the
error of each part over the error of predicting no motion (1 = no better than a camera that does
not move), on training pairs and on held-out pairs. A few minutes on one CPU thread; the whole
model's version of this check is ``tools/window_pose_check.py``.

    OMP_NUM_THREADS=1 python tools/motion_probe.py --out probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from data.synth import SynthConfig, synthetic_sequence
from recon.files import atomic_write
from recon.model.motion_encoder import PairMotionEncoder, motion_frame_size, motion_frames, motion_pool

FRAMES = 24
IMAGE_SIZE = (96, 128)
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def render_scenes(seeds: range) -> list[dict]:
    """Per seed: grey motion frames [T, 1, h, w], cam2world [T, 4, 4], mean depth [T], f / W."""
    pool = motion_pool(IMAGE_SIZE)
    scenes = []
    for seed in seeds:
        seq = synthetic_sequence(SynthConfig(num_frames=FRAMES, num_dynamic=1), seed)
        frames = [seq[i] for i in range(FRAMES)]
        images = torch.from_numpy(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).float() / 255.0
        scenes.append({
            "frames": motion_frames((images - _MEAN) / _STD, pool),
            "cam2world": np.stack([f.cam2world for f in frames]).astype(np.float64),
            "mean_depth": np.array([f.depth[f.depth > 0].mean() for f in frames]),
            "focal": float(frames[0].K[0, 0] / IMAGE_SIZE[1]),
        })
    return scenes


def sample_pairs(scenes: list[dict], n: int, rng: np.random.Generator):
    """n random pairs -> (current [n,1,h,w], earlier, focal [n], rotvec [n,3], translation [n,3])."""
    cur, ear, focal, rotvec, trans = [], [], [], [], []
    for _ in range(n):
        scene = scenes[rng.integers(len(scenes))]
        j, stride = int(rng.integers(1, 8)), int(rng.integers(1, 4))
        t = int(rng.integers(j * stride, FRAMES))
        s = t - j * stride
        rel = np.linalg.inv(scene["cam2world"][s]) @ scene["cam2world"][t]
        cur.append(scene["frames"][t])
        ear.append(scene["frames"][s])
        focal.append(scene["focal"])
        rotvec.append(Rotation.from_matrix(rel[:3, :3]).as_rotvec())
        trans.append(rel[:3, 3] / scene["mean_depth"][s])
    focal_t, rotvec_t, trans_t = (torch.from_numpy(np.asarray(x)).float() for x in (focal, rotvec, trans))
    return torch.stack(cur), torch.stack(ear), focal_t, rotvec_t, trans_t


class PoseProbe(nn.Module):
    """PairMotionEncoder -> MLP -> (rotation vector, translation / mean depth * 10)."""

    def __init__(self, width: int, dim: int) -> None:
        super().__init__()
        self.encoder = PairMotionEncoder(IMAGE_SIZE, width, dim)
        self.head = nn.Sequential(nn.GELU(), nn.Linear(dim + 1, 256), nn.GELU(), nn.Linear(256, 6))

    def forward(self, current, earlier, focal):
        return self.head(torch.cat((self.encoder(current, earlier), focal[:, None]), 1))


@torch.no_grad()
def error_ratios(model: PoseProbe, scenes: list[dict], seed: int, n: int = 1024) -> dict:
    """Mean error of rotation / translation over the no-motion error, on n pairs."""
    model.eval()
    cur, ear, focal, rotvec, trans = sample_pairs(scenes, n, np.random.default_rng(seed))
    pred = model(cur, ear, focal)
    model.train()
    rot = (pred[:, :3] - rotvec).norm(dim=1).mean() / rotvec.norm(dim=1).mean()
    tr = (pred[:, 3:] / 10 - trans).norm(dim=1).mean() / trans.norm(dim=1).mean()
    return {"rotation_ratio": float(rot), "translation_ratio": float(tr)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-scenes", type=int, default=300)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=32, help="encoder channels (head.motion_width)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    train, test = render_scenes(range(args.train_scenes)), render_scenes(range(5000, 5032))
    model = PoseProbe(args.width, 192)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    history = []
    for step in range(args.steps + 1):
        cur, ear, focal, rotvec, trans = sample_pairs(train, args.batch, rng)
        pred = model(cur, ear, focal)
        loss = 30 * ((pred[:, :3] - rotvec).abs().mean() + (pred[:, 3:] / 10 - trans).abs().mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            row = {"step": step, "train": error_ratios(model, train, 1),
                   "held_out": error_ratios(model, test, 2)}
            history.append(row)
            print(json.dumps(row), flush=True)
    result = {"settings": vars(args), "motion_frame_size": motion_frame_size(IMAGE_SIZE),
              "seconds": round(time.time() - start, 1), "final": history[-1], "history": history}
    if args.out:
        text = json.dumps(result, indent=2)
        atomic_write(Path(args.out), lambda tmp: tmp.write_text(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
