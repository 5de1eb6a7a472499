"""Memory-state norm over a long stream: does a memory layer's state stay bounded?

Streams a looped synthetic-looking clip (a texture that slides and brightens) through a model preset
with random weights, one frame at a time, and records the largest norm over the memory state's
tensors after every frame. Several option sets of one memory type run side by side, e.g. the
elastic memory with and without retention:

    python -m tools.bench.bench_state_norm --memory elastic --frames 2000 \\
        --variant default '{}' --variant no-retention '{"retention_frames": null}' --out norms.json

Prints a table of the norm at chosen frames and the ratio max(late half) / max(early part), the
quantity the bounded-state tests check.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from layers.registry import MEMORY_TYPES
from recon.model.state import memory_state_norm, norm_growth
from tools.bench.common import markdown_table, write_json


def looped_clip(frames: int, height: int, width: int, seed: int = 3) -> torch.Tensor:
    """[1, frames, 3, H, W] in [0, 1]: a random texture sliding right and brightening periodically."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height, 2 * width, generator=g)
    clip = [torch.roll(base, shifts=t, dims=-1)[..., :width] * (0.8 + 0.2 * math.sin(0.3 * t))
            for t in range(frames)]
    return torch.stack(clip, 1).clamp(0, 1)


def stream_norms(preset: str, memory: str, options: dict, frames: int, seed: int = 0) -> list[float]:
    """Largest memory-state tensor norm after each of ``frames`` steps (random weights, seed ``seed``)."""
    from recon.model import build_model, load_model_config

    torch.manual_seed(seed)
    model = build_model(load_model_config(preset, memory={"type": memory, "options": options})).eval()
    H, W = model.cfg.image_size
    clip = looped_clip(64, H, W)
    state, norms = model.init_state(1), []
    with torch.no_grad():
        for t in range(frames):
            _, state = model.step(clip[:, t % clip.shape[1]], state)
            norms.append(memory_state_norm(state))
    return norms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--memory", default="elastic", help=f"memory type ({', '.join(MEMORY_TYPES)})")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OPTIONS_JSON"),
                        help="a named option set of the memory layer (repeat); default: one, '{}'")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file for the rows and every per-frame norm")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = args.variant or [("default", "{}")]
    marks = [m for m in (10, 100, 500, 1000, 2000, 5000, 10000) if m <= args.frames]
    rows, curves = [], {}
    for name, options in variants:
        norms = stream_norms(args.preset, args.memory, json.loads(options), args.frames)
        curves[name] = norms
        row = {"variant": name, "options": options}
        row.update({f"frame {m}": round(norms[m - 1], 2) for m in marks})
        row["late / early"] = round(norm_growth(norms), 3)
        rows.append(row)
        print(markdown_table([row]), flush=True)
    print(markdown_table(rows))
    if args.out:
        write_json(args.out, "state_norm", rows, preset=args.preset, memory=args.memory, frames=args.frames,
                   norms=curves)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
