"""`recon demo`: the built-in default job, end to end, on a fresh machine.

1. Generates a deterministic synthetic video with exact ground truth (``data.synth``; written once
   in the TUM RGB-D layout with video.mp4 to OUT/data/, reused on later runs).
2. Streams it through the shipped checkpoint (``recon run`` with all its outputs) and saves a Rerun
   recording OUT/demo.rrd.
3. Prints ATE (Sim(3)) beside the static-camera and constant-velocity baselines and the Sim(3)
   scale, and depth AbsRel / delta<1.25, against the ground truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recon.commands.argtypes import bounded_int
from recon.commands.run import add_run_options, exit_after_run, print_summary, served_loggers

NAME = "demo"
HELP = "generate a synthetic video, reconstruct it with the shipped model, report accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument(
        "--frames", type=bounded_int(3), default=150, help="length of the synthetic video (150)"
    )
    parser.add_argument("--seed", type=int, default=2026, help="seed of the synthetic scene (2026)")
    parser.add_argument("--trajectory", default="loop", help="camera path kind (default loop)")
    parser.add_argument("--dynamic", type=bounded_int(0), default=1, help="independently moving objects (1)")
    add_run_options(parser)
    parser.set_defaults(rrd="__default__")


def _synthetic_video(out: Path, frames: int, seed: int, trajectory: str, dynamic: int, size_hw) -> Path:
    """Write (or reuse) the demo sequence; returns its folder."""
    from tqdm import tqdm

    from data.synth import SynthConfig, synthetic_sequence, write_tum_sequence

    config = SynthConfig(
        num_frames=frames, width=size_hw[1], height=size_hw[0], trajectory=trajectory, num_dynamic=dynamic
    )
    folder = out / "data" / f"synth_{trajectory}_{frames}f_seed{seed}_{size_hw[1]}x{size_hw[0]}_dyn{dynamic}"
    if (folder / "meta.json").is_file() and (folder / "video.mp4").is_file():
        return folder
    if folder.exists():  # an interrupted earlier generation: start over
        import shutil

        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    seq = synthetic_sequence(config, seed)
    with tqdm(total=frames, unit="frame", desc="rendering synthetic video") as bar:
        write_tum_sequence(seq, folder, fps=config.fps, video=True, extra_meta=seq.meta, progress=bar.update)
    return folder


def main(args: argparse.Namespace) -> int:
    from data import load_sequence
    from recon.checkpoint import DEFAULT_CHECKPOINT, read_config
    from recon.eval.scoring import GroundTruthScorer
    from recon.infer.outputs import prepare_output_dir
    from recon.infer.session import RunOptions, run_source

    out = prepare_output_dir(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    size_hw = (
        tuple(read_config(checkpoint / "config.yaml")["model"]["image_size"])
        if checkpoint.is_dir()
        else (96, 128)
    )
    folder = _synthetic_video(out, args.frames, args.seed, args.trajectory, args.dynamic, size_hw)
    if args.rrd == "__default__":
        args.rrd = str(out / "demo.rrd")
    source = load_sequence(folder, format="tum")
    print(f"streaming {folder} ({len(source)} frames) through {checkpoint}")
    # the demo owns OUT/run: a rerun replaces the previous demo's run (only the files it wrote)
    with served_loggers() as serving:
        summary = run_source(
            source, RunOptions.from_args(args, overwrite=True), out / "run", scorer=GroundTruthScorer(),
            extra_settings={"demo_data": str(folder)}, serving=serving,
        )
        print_summary(summary, out / "run")
        if args.rrd:
            print(f"Rerun recording: {args.rrd} (view it with: .venv/bin/rerun {args.rrd})")
        (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return exit_after_run(summary, serving)
