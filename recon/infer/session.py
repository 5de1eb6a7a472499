"""A `recon run` / `recon demo` session: typed options, one opened source, one output folder.

:class:`RunOptions` is what the commands build from their arguments (and nothing else);
:func:`run_source` checks everything that can be checked without the model, claims the output
folder, loads the checkpoint and streams the source through :class:`recon.infer.runner.StreamRunner`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data.fit import FitPolicy
from recon.errors import InputError


@dataclass
class RunOptions:
    """Options of a streaming run (the `recon run` / `recon demo` flags of the same names).

    Attributes:
        checkpoint: exported folder, .safetensors or .ckpt; None = the shipped tiny model.
        device: ``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: CPU threads for the model (>= 1).
        stride: use every N-th frame. max_frames: stop after this many frames (None = all).
        resize: fit policy to the model size: ``crop`` (keep aspect) or ``resize``.
        intrinsics: known intrinsics at the source resolution (``fx,fy,cx,cy`` or a file), ``source``
            for the dataset's calibration, None to let the model predict them.
        save_depth: write depth/ and conf/ .npy per frame.
        voxel_size, max_points, conf_quantile: the fused map (``StreamingPointMap``).
        rerun, rerun_url, web_port, rerun_port, rerun_memory_limit, rrd: the Rerun viewer / recording
            (``RerunOptions``).
        quiet: no progress bar.
        overwrite: replace the outputs of an earlier run in the output folder.
        revisit: correct poses at revisited places (``recon.model.revisit``); False = the window
            odometry alone (``--no-revisit``).
        refine: refine the window poses against the pair flow and self-calibrate the focal length
            and the depth's contrast (``recon.model.window_refine``); False = the camera trunk's
            poses (``--no-refine``).
    """

    checkpoint: str | None = None
    device: str = "auto"
    threads: int = 1
    stride: int = 1
    max_frames: int | None = None
    resize: FitPolicy = "crop"
    intrinsics: str | None = None
    save_depth: bool = False
    voxel_size: float | None = None
    max_points: int = 500_000
    conf_quantile: float = 0.3
    rerun: Literal["off", "spawn", "serve", "connect"] = "off"
    rerun_url: str | None = None
    web_port: int | None = None
    rerun_port: int | None = None
    rerun_memory_limit: str = "1GiB"
    rrd: str | None = None
    quiet: bool = False
    overwrite: bool = False
    revisit: bool = True
    refine: bool = True

    @classmethod
    def from_args(cls, args, **overrides) -> RunOptions:
        """The options of an argparse namespace (fields it lacks keep their defaults)."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(**{**values, **overrides})


def resolve_device(name: str):
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> a torch device that exists on this machine."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available on this machine")
    return device


def run_source(
    source,
    options: RunOptions,
    out_dir: str | Path,
    scorer=None,
    extra_settings: dict | None = None,
    serving: list | None = None,
) -> dict:
    """Run the model over an opened source; returns the summary (also OUT/summary.json).

    Everything that can be checked without the model is checked first (options, intrinsics against
    the source, the Rerun options and ports, the output folder), so a mistake costs no model load.
    The output folder is claimed (:class:`recon.infer.outputs.RunFolder`: locked, refused when it
    holds other files unless ``options.overwrite``, which deletes only what the earlier run wrote)
    for the whole run. ``scorer`` (e.g. ``GroundTruthScorer``) is fed every prediction and gives
    the summary's ``accuracy``. With ``rerun="serve"`` the logger keeps serving after the run; it
    is appended to ``serving`` for the caller to close (closed here when ``serving`` is None).
    """
    import torch
    from tqdm import tqdm

    from data.readers.imageio import collect_ground_truth_problems
    from recon.checkpoint import DEFAULT_CHECKPOINT, load_model
    from recon.infer.outputs import RunFolder, RunOutputs
    from recon.infer.pointmap import StreamingPointMap
    from recon.infer.rerun_logger import RerunLogger, RerunOptions
    from recon.infer.runner import StreamRunner
    from recon.infer.sources import (
        FrameStream,
        WebcamSequence,
        check_intrinsics,
        check_source_intrinsics,
        intrinsics_label,
        parse_intrinsics,
    )

    device = resolve_device(options.device)
    if options.threads < 1:
        raise InputError(f"--threads: expected >= 1, got {options.threads}")
    use_source_K = options.intrinsics == "source"
    known_K = None if use_source_K else parse_intrinsics(options.intrinsics)
    check_source_intrinsics(source, use_source_K)
    if known_K is not None and not isinstance(source, WebcamSequence) and len(source):
        with collect_ground_truth_problems():  # only the image size matters here
            h, w = source[0].image.shape[:2]
        check_intrinsics(known_K, w, h, f"--intrinsics {options.intrinsics}")
    point_map = StreamingPointMap(options.voxel_size, options.max_points, options.conf_quantile)
    for problem in getattr(source, "meta", {}).get("ground_truth_problems", []):
        print(f"warning: {problem}; running without it", file=sys.stderr)
    rerun = RerunOptions(viewer=options.rerun, save=options.rrd, url=options.rerun_url,
                         web_port=options.web_port, grpc_port=options.rerun_port,
                         memory_limit=options.rerun_memory_limit)
    rerun.check()
    with RunFolder(out_dir, overwrite=options.overwrite, save_depth=options.save_depth,
                   extra_files=(options.rrd,)):
        torch.set_num_threads(options.threads)
        checkpoint = options.checkpoint or DEFAULT_CHECKPOINT
        model = load_model(checkpoint, device)
        model.set_revisit(options.revisit and model.cfg.head.revisit.enabled)
        model.set_refine(options.refine and model.cfg.head.refine.enabled)
        stream = FrameStream(
            source,
            tuple(model.cfg.image_size),
            options.resize,
            options.stride,
            options.max_frames,
            known_K=known_K,
            use_source_K=use_source_K,
            lenient_ground_truth=True,
        )
        outputs = RunOutputs(out_dir, point_map, save_depth=options.save_depth)
        logger = RerunLogger(rerun, name=source.name) if rerun.enabled else None
        if logger is not None and serving is not None:
            serving.append(logger)
        settings = {
            "source": str(getattr(source, "root", source.name)),
            "format": source.format,
            "checkpoint": str(checkpoint),
            "device": str(device),
            "stride": options.stride,
            "max_frames": options.max_frames,
            "resize": options.resize,
            "image_size": list(model.cfg.image_size),
            "intrinsics": intrinsics_label(source, options.intrinsics),
            "revisit": model.cfg.head.revisit.enabled,
            "refine": model.cfg.head.refine.enabled,
            "rrd": options.rrd,
            "ground_truth_problems": list(getattr(source, "meta", {}).get("ground_truth_problems", [])),
            **(extra_settings or {}),
        }
        runner = StreamRunner(model, outputs, logger, device, settings, scorer=scorer)
        try:
            total = len(stream) or None
            with tqdm(total=total, unit="frame", disable=options.quiet, dynamic_ncols=True) as bar:
                return runner.run(stream, progress=bar)
        finally:
            if logger is not None and serving is None:
                logger.close()
