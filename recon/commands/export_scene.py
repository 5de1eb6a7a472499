"""`recon export-scene RUN_DIR --format colmap|gltf|ply`: a finished run folder for other tools.

colmap: a COLMAP text model folder (cameras.txt PINHOLE at the model resolution, images.txt
world-to-camera poses, points3D.txt); gltf: one .glb (map points, camera frustums, trajectory);
ply: the fused map as binary PLY. Conventions and what is read: :mod:`recon.infer.scene_export`.
An interrupted run is exported up to its last finished frame, and the command says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recon.commands.argtypes import bounded_int, finite_float

NAME = "export-scene"
HELP = "export a finished run folder as COLMAP text, glTF (GLB) or PLY"
_SUFFIX = {"colmap": "_colmap", "gltf": ".glb", "ply": "_map.ply"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a finished `recon run`")
    parser.add_argument("--format", required=True, choices=("colmap", "gltf", "ply"),
                        help="colmap (text model folder), gltf (.glb) or ply")
    parser.add_argument("--out", default=None,
                        help="target folder (colmap) or file (gltf, ply); default beside RUN_DIR: "
                        "RUN_DIR_colmap/, RUN_DIR.glb or RUN_DIR_map.ply")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing target")
    parser.add_argument("--images", action="store_true",
                        help="colmap: also write images/frame_NNNNNN.png, the frames at the model resolution "
                        "read again from the run's source (for nerfstudio / gsplat)")
    parser.add_argument("--frustum-depth", type=finite_float(0.0, low_open=True), default=None,
                        help="gltf: frustum depth in model units (default 5%% of the scene's extent)")
    parser.add_argument("--camera-every", type=bounded_int(1), default=None,
                        help="gltf: a frustum for every N-th frame (default: at most 200 frustums)")


def main(args: argparse.Namespace) -> int:
    from recon.infer.scene_export import read_run, write_colmap, write_glb, write_ply

    run = read_run(args.run_dir)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir.parent / f"{run_dir.resolve().name}{_SUFFIX[args.format]}"
    for note in run.notes:
        print(f"warning: {note}", file=sys.stderr)
    h, w = run.image_size
    if args.format == "colmap":
        write_colmap(run, out, overwrite=args.overwrite, images=args.images)
        cameras = len((out / "cameras.txt").read_text().splitlines()) - 4
        print(f"wrote COLMAP text model {out}: {cameras} PINHOLE camera(s) at the model resolution {w}x{h}, "
              f"{len(run.cam2world)} images (world-to-camera poses"
              f"{', frames in images/' if args.images else ''}), {len(run.points)} points")
    elif args.format == "gltf":
        every = args.camera_every or max(1, -(-len(run.cam2world) // 200))
        write_glb(run, out, frustum_depth=args.frustum_depth, camera_every=every, overwrite=args.overwrite)
        print(f"wrote {out}: {len(run.points)} points, {len(range(0, len(run.cam2world), every))} camera "
              f"frustums (every {every} frame(s)), trajectory of {len(run.cam2world)} poses (glTF axes: "
              "y up, x, -y, -z of the run's OpenCV world)")
    else:
        write_ply(run, out, overwrite=args.overwrite)
        print(f"wrote {out}: {len(run.points)} points (xyz float32, rgb uint8, confidence float32)")
    if run.status != "complete":
        print(f"note: {run.notes[0]}")
    return 0
