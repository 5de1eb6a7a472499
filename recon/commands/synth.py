"""`recon synth OUT`: generate a synthetic 4D dataset (TUM RGB-D layout, one folder per sequence).

Sequence k is ``synthetic_sequence(config, seed=sequence_seed(S, k))`` (deterministic per seed) and
is written to ``OUT/seq_<k>`` by ``data.synth.write_tum_sequence``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from recon.commands.argtypes import finite_float
from recon.errors import InputError

NAME = "synth"
HELP = "generate synthetic 4D sequences (rooms, moving objects, exact depth/poses) in the TUM RGB-D layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from data.synth.sequence import SEQUENCE_TRAJECTORIES

    parser.add_argument("out", metavar="OUT", help="output folder (created; seq_000, seq_001, ... inside)")
    parser.add_argument("--count", type=int, default=1, help="number of sequences (default 1)")
    parser.add_argument("--frames", type=int, default=64, help="frames per sequence (default 64)")
    parser.add_argument("--width", type=int, default=128, help="image width in pixels (default 128)")
    parser.add_argument("--height", type=int, default=96, help="image height in pixels (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--dynamic", type=int, default=1, help="independently moving objects (default 1)")
    parser.add_argument(
        "--trajectory",
        choices=SEQUENCE_TRAJECTORIES,
        default="mixed",
        help="camera path kind; 'mixed' draws one per sequence (default)",
    )
    parser.add_argument(
        "--fps",
        type=finite_float(0.0, low_open=True),
        default=30.0,
        help="frame rate of timestamps and video (30)",
    )
    parser.add_argument(
        "--fov",
        type=finite_float(),
        nargs=2,
        default=(50.0, 90.0),
        metavar=("MIN", "MAX"),
        help="horizontal field-of-view range in degrees (default 50 90)",
    )
    parser.add_argument("--no-shadows", action="store_true", help="skip cast shadows (faster)")
    parser.add_argument(
        "--supersample",
        type=int,
        default=1,
        metavar="S",
        help="odd S: S x S rays per pixel for anti-aliased images (S^2 slower; default 1)",
    )
    parser.add_argument("--no-video", action="store_true", help="do not write video.mp4")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def sequence_seed(base_seed: int, index: int) -> int:
    """The seed of sequence ``index`` of a dataset generated with ``--seed base_seed``."""
    import numpy as np

    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


def _check_args(args: argparse.Namespace) -> Path:
    for name, low in (("count", 1), ("frames", 1), ("width", 8), ("height", 8), ("dynamic", 0)):
        if getattr(args, name) < low:
            raise InputError(f"--{name}: expected an integer >= {low}, got {getattr(args, name)}")
    if args.supersample < 1 or args.supersample % 2 == 0:
        raise InputError(f"--supersample: expected an odd integer >= 1, got {args.supersample}")
    if args.seed < 0:
        raise InputError(f"--seed: expected an integer >= 0, got {args.seed}")
    if not args.fps > 0:
        raise InputError(f"--fps: expected > 0, got {args.fps}")
    if not 1.0 <= args.fov[0] <= args.fov[1] < 179.0:
        raise InputError(f"--fov: expected 1 <= MIN <= MAX < 179 degrees, got {args.fov[0]} {args.fov[1]}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder (expected a folder for the sequences)")
    if out.is_dir():
        clash = [out / f"seq_{k:03d}" for k in range(args.count) if (out / f"seq_{k:03d}").exists()]
        if clash:
            raise InputError(f"{clash[0]}: already exists (choose another OUT or remove it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{out}: cannot create the output folder ({err.strerror})") from err
    if not os.access(out, os.W_OK):
        raise InputError(f"{out}: not writable")
    return out


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from data.synth import SynthConfig, synthetic_sequence, write_tum_sequence

    out = _check_args(args)
    config = SynthConfig(
        num_frames=args.frames,
        width=args.width,
        height=args.height,
        trajectory=args.trajectory,
        num_dynamic=args.dynamic,
        fov_range=(float(args.fov[0]), float(args.fov[1])),
        fps=args.fps,
        shadows=not args.no_shadows,
        supersample=args.supersample,
    )
    with tqdm(total=args.count * args.frames, unit="frame", disable=args.quiet, desc="recon synth") as bar:
        for k in range(args.count):
            seed = sequence_seed(args.seed, k)
            seq = synthetic_sequence(config, seed=seed, name=f"seq_{k:03d}")
            bar.set_postfix_str(f"seq_{k:03d} {seq.meta['trajectory_kind']}")
            write_tum_sequence(
                seq,
                out / f"seq_{k:03d}",
                fps=args.fps,
                video=not args.no_video,
                extra_meta={"command": "recon synth", "base_seed": args.seed, "index": k},
                progress=bar.update,
            )
    if not args.quiet:
        print(f"wrote {args.count} sequence(s) of {args.frames} frames to {out}")
    return 0
