"""`recon run SOURCE`: streaming reconstruction of a video file, image folder, dataset or webcam.

Writes OUT/trajectory.txt (TUM), intrinsics.txt, map.ply, optional depth/ and conf/, summary.json,
and optionally a Rerun recording / live viewer. The folder belongs to one run: it is locked while
the run writes it, and a folder holding other files is refused unless ``--overwrite`` (which deletes
only what the earlier run's manifest.json lists). With ground truth in the source, summary.json's
``accuracy`` holds depth and pose errors; the pose entry puts the model's ATE beside the
static-camera and constant-velocity baselines and the Sim(3) scale
(``recon.eval.scoring.GroundTruthScorer.result``). Ctrl-C or SIGTERM stop at the next frame boundary,
leaving valid files for every finished frame (summary.json then says "interrupted").
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from recon.commands.argtypes import bounded_int, file_path, finite_float

NAME = "run"
HELP = "stream a video / image folder / dataset sequence / webcam through the model"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `recon run` and `recon demo`."""
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="exported folder, .safetensors or .ckpt (default: the shipped tiny model)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument(
        "--threads",
        type=bounded_int(1),
        default=1,
        help="CPU threads for the model (default 1: a small model gains little from more, "
        "and loses a lot when other processes, e.g. a viewer, share the cores)",
    )
    parser.add_argument("--stride", type=bounded_int(1), default=1, help="use every N-th frame (default 1)")
    parser.add_argument("--max-frames", type=bounded_int(1), default=None, help="stop after this many frames")
    parser.add_argument(
        "--resize",
        choices=("crop", "resize"),
        default="crop",
        help="fit frames to the model size: crop (keep aspect, default) or resize",
    )
    parser.add_argument(
        "--intrinsics",
        default=None,
        metavar="K",
        help="known intrinsics at the source resolution: 'fx,fy,cx,cy' or a file "
        "(4 numbers or a 3x3 matrix); 'source' uses the dataset's calibration. "
        "Default: the model predicts them",
    )
    parser.add_argument("--save-depth", action="store_true", help="write depth/ and conf/ .npy per frame")
    parser.add_argument(
        "--voxel-size",
        type=finite_float(0.0, low_open=True),
        default=None,
        help="map voxel size in model units (default: 1/100 of the first median depth)",
    )
    parser.add_argument(
        "--max-points", type=bounded_int(1), default=500_000, help="bound on the fused map size"
    )
    parser.add_argument(
        "--conf-quantile",
        type=finite_float(0.0, 1.0, high_open=True),
        default=0.3,
        help="drop each frame's least confident fraction of points (default 0.3)",
    )
    parser.add_argument(
        "--rerun",
        choices=("off", "spawn", "serve", "connect"),
        default="off",
        help="live viewer: spawn a native viewer, serve the web viewer, or connect",
    )
    parser.add_argument("--rerun-url", default=None, help="gRPC url for --rerun connect")
    parser.add_argument(
        "--web-port", type=bounded_int(1, 65535), default=None,
        help="web viewer port for --rerun serve (default 9090)",
    )
    parser.add_argument(
        "--rerun-port", type=bounded_int(1, 65535), default=None,
        help="gRPC server port for --rerun serve (default 9876)",
    )
    parser.add_argument(
        "--rerun-memory-limit", default="1GiB", metavar="SIZE",
        help="bound on what --rerun serve buffers for viewers that connect late, e.g. 512MB, 2GiB, 25%% "
        "(of RAM; default 1GiB); past it the oldest frames are dropped from the server",
    )
    parser.add_argument("--rrd", default=None, type=file_path("an .rrd file path"),
                        help="save the Rerun recording to this .rrd file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-revisit", dest="revisit", action="store_false",
                        help="no pose corrections at revisited places: the window odometry alone")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="no geometric refinement of the window poses and no self-calibration "
                             "(focal length, depth contrast): the camera trunk's poses and fov as "
                             "predicted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="video file, image folder, dataset sequence folder, or webcam index (0, 1, ...)",
    )
    parser.add_argument("--out", default="outputs/run", help="output folder (default outputs/run)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier run in --out (only the files that run wrote are deleted); "
        "without it a non-empty --out is refused",
    )
    parser.add_argument("--format", default=None, help="dataset format of SOURCE (default: detected)")
    parser.add_argument(
        "--fov",
        type=finite_float(1.0, 179.0),
        default=None,
        help="horizontal FoV in degrees for a plain video's guessed intrinsics",
    )
    add_run_options(parser)


def print_summary(summary: dict, out_dir: str | Path) -> None:
    print(
        f"{summary['status']}: {summary['frames']} frames at {summary['fps']:.1f} frames/s "
        f"(median latency {summary['latency_ms_median']:.1f} ms, peak RSS {summary['peak_rss_mb']:.0f} MB), "
        f"{summary['points']} map points"
    )
    for key, what in (("blank_frames", "frames without usable texture kept out of the map"),
                      ("ground_truth_failures", "frames kept without their unreadable ground truth"),
                      ("pose_fallbacks", "frames that kept the previous pose"),
                      ("revisit_corrections", "frames whose pose was corrected at a revisited place")):
        if summary.get(key):
            print(f"{summary[key]} {what}")
    acc = summary.get("accuracy", {})
    if "pose" in acc:
        print(pose_line(acc["pose"]))
    if "depth" in acc:
        d = acc["depth"]
        print(
            f"depth vs ground truth: AbsRel {d['abs_rel']:.4f}, delta<1.25 {d['delta1']:.4f} "
            "(per-frame median scale)"
        )
    names = sorted(p.name for p in Path(out_dir).iterdir() if not p.name.startswith("."))
    print(f"outputs in {out_dir}: " + json.dumps(names))


def pose_line(p: dict) -> str:
    """The pose accuracy of a run summary (``summary["accuracy"]["pose"]``) as one printed line."""
    if "error" in p:
        model = f"ATE not computed ({p['error']})"
    else:
        model = (f"ATE {p['ate_rmse']:.4f} m (Sim(3)), RPE {p['rpe_trans_rmse']:.4f} m / "
                 f"{p['rpe_rot_rmse_deg']:.2f} deg over {p['frames']} frames")
    parts = []
    if p.get("static_ate_rmse") is not None:
        parts.append(f"static camera {p['static_ate_rmse']:.4f} m")
    if p.get("constant_velocity_ate_rmse") is not None:
        parts.append(f"constant velocity {p['constant_velocity_ate_rmse']:.4f} m")
    if p.get("ate_vs_static") is not None:
        parts.append(f"ATE / static {p['ate_vs_static']:.3f}")
    if p.get("sim3_scale") is not None:
        parts.append(f"Sim(3) scale {p['sim3_scale']:.4g}")
    return f"pose vs ground truth: {model}" + (f"; {', '.join(parts)}" if parts else "")


def main(args: argparse.Namespace) -> int:
    from recon.eval.scoring import GroundTruthScorer
    from recon.infer.session import RunOptions, run_source
    from recon.infer.sources import open_source

    source = open_source(args.source, args.format, args.fov)
    with served_loggers() as serving:
        summary = run_source(source, RunOptions.from_args(args), args.out, scorer=GroundTruthScorer(),
                             serving=serving)
        print_summary(summary, args.out)
        return exit_after_run(summary, serving)


@contextlib.contextmanager
def served_loggers():
    """The list ``run_source`` fills with the Rerun loggers that still serve after a run; every
    one is closed when the block ends (normally, on Ctrl-C or on an error)."""
    serving: list = []
    try:
        yield serving
    finally:
        for logger in serving:
            logger.close()


def exit_after_run(summary: dict, serving: list) -> int:
    """The exit code of a finished ``recon run`` / ``recon demo``: 130 when the run was interrupted;
    otherwise keep serving (until Ctrl-C) and 0."""
    if summary["status"] == "interrupted":
        return 130
    wait_while_serving(serving)
    return 0


def wait_while_serving(loggers: list) -> None:
    """Keep the process (and so the Rerun gRPC server and web viewer) alive until Ctrl-C or SIGTERM,
    when a logger of ``loggers`` still serves; the caller closes them."""
    import signal
    import time

    live = [lg for lg in loggers if lg.serving]
    if not live:
        return
    print(f"rerun: the run has ended; still serving the recording at {live[0].page_url} "
          "(press Ctrl-C to stop)", flush=True)
    stop = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
