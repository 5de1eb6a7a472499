"""`recon eval`'s work: typed options in, every checkpoint streamed over every protocol sequence,
one comparison report out.

:class:`EvalOptions` is what the command builds from its arguments; :func:`evaluate_checkpoints`
checks what can be checked before any model streams (labels, limits, the protocol's data, every
checkpoint loaded on the CPU), then streams each model over each sequence once
(:func:`recon.eval.drift.stream_records`) and writes the report (:func:`recon.eval.report.write_report`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from recon.errors import InputError


@dataclass
class EvalOptions:
    """Options of a drift evaluation (the `recon eval` flags of the same names).

    Attributes:
        protocol: built-in protocol name or a protocol YAML path.
        checkpoints: exported folders, .safetensors or .ckpt files (one model each).
        names: report label per checkpoint, in order (empty: derived from the paths).
        out: report folder.
        data_root: folder holding the protocol's dataset sequences.
        max_frames: cap every sequence (>= 3), None = the protocol's selection.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        quiet: no progress bars.
        revisit: correct poses at revisited places; False = the window odometry alone
            (``--no-revisit``, e.g. to measure what the memory layers do on their own).
        refine: refine the window poses, self-calibrate focal length and depth contrast; False = the camera
            trunk's poses (``--no-refine``).
        memory_horizon: empty the memory layers every this many frames (``--memory-horizon``,
            :class:`recon.eval.memory_horizon.MemoryHorizon`, a diagnostic); None = never.
    """

    protocol: str | None
    checkpoints: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    out: str = "outputs/eval"
    data_root: str | None = None
    max_frames: int | None = None
    device: str = "auto"
    quiet: bool = False
    revisit: bool = True
    refine: bool = True
    memory_horizon: int | None = None

    def check(self) -> None:
        """Raise InputError for options that can be refused before anything is loaded."""
        if self.protocol is None:
            raise InputError(
                "PROTOCOL: expected a built-in protocol name or a YAML file (see recon eval --list)")
        if not self.checkpoints:
            raise InputError("--checkpoint: expected at least one checkpoint to evaluate")
        if self.max_frames is not None and self.max_frames < 3:
            raise InputError(f"--max-frames: expected >= 3, got {self.max_frames}")
        if self.memory_horizon is not None and self.memory_horizon < 1:
            raise InputError(f"--memory-horizon: expected a frame count >= 1, got {self.memory_horizon}")

    def labels(self) -> list[str]:
        """The report label of each checkpoint (distinct)."""
        if self.names and len(self.names) != len(self.checkpoints):
            raise InputError(
                f"--name: expected one per --checkpoint ({len(self.checkpoints)}), got {len(self.names)}"
            )
        names = self.names or [Path(c).stem if Path(c).suffix else Path(c).name for c in self.checkpoints]
        if len(set(names)) != len(names):
            raise InputError(
                f"report labels must be distinct, got {names}; pass --name for each --checkpoint")
        return names

    def command(self) -> str:
        """The `recon eval` command line that reproduces this evaluation."""
        parts = ["recon", "eval", str(self.protocol)]
        for i, ckpt in enumerate(self.checkpoints):
            parts += ["--checkpoint", ckpt] + (["--name", self.names[i]] if self.names else [])
        parts += ["--out", self.out]
        for flag, value in (("--data-root", self.data_root), ("--max-frames", self.max_frames),
                            ("--memory-horizon", self.memory_horizon)):
            if value is not None:
                parts += [flag, str(value)]
        if self.device != "auto":
            parts += ["--device", self.device]
        if not self.revisit:
            parts.append("--no-revisit")
        if not self.refine:
            parts.append("--no-refine")
        return shlex.join(parts)


def safe_name(name: str) -> str:
    """``name`` as one file-name component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "sequence"


def model_facts(model, checkpoint: str) -> dict:
    """What the report records of a model: its checkpoint, memory layout, size and signature."""
    cfg = model.cfg
    return {
        "checkpoint": checkpoint,
        "memory_type": cfg.memory.type,
        "memory_depths": list(cfg.memory.depths),
        "image_size": list(cfg.image_size),
        "dim": cfg.dim,
        "depth": cfg.depth,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "signature": cfg.signature(),
    }


def evaluate_checkpoints(options: EvalOptions) -> dict:
    """Evaluate every checkpoint on the protocol; returns the report's paths (``write_report``)."""
    from tqdm import tqdm

    from recon.checkpoint import load_model
    from recon.eval.drift import evaluate_records, stream_records
    from recon.eval.memory_horizon import MemoryHorizon
    from recon.eval.protocols import load_protocol, open_sequences
    from recon.eval.report import ModelRun, write_report
    from recon.infer.session import resolve_device
    from recon.trajectory import write_tum

    options.check()
    protocol = load_protocol(options.protocol)
    names = options.labels()
    device = resolve_device(options.device)
    if protocol.dataset.format != "synthetic":  # fail on missing data before loading any model
        open_sequences(protocol, options.data_root, None, options.max_frames)
    # every checkpoint is checked (loaded on the CPU) before the first sequence streams; each model
    # then visits the device alone, so several large models never share accelerator memory
    models = [load_model(c, "cpu") for c in options.checkpoints]
    for model in models:
        model.set_revisit(options.revisit and model.cfg.head.revisit.enabled)
        model.set_refine(options.refine and model.cfg.head.refine.enabled)
    out = Path(options.out)
    runs = []
    for name, ckpt, model in zip(names, options.checkpoints, models, strict=True):
        model.to(device)
        run = ModelRun(name=name, checkpoint=str(ckpt), model=model_facts(model, str(ckpt)))
        hw = tuple(model.cfg.image_size)
        sequences = open_sequences(protocol, options.data_root, hw, options.max_frames, str(device))
        streamed = model if options.memory_horizon is None else MemoryHorizon(model, options.memory_horizon)
        for seq_name, seq in sequences:
            traj_dir = out / "trajectories"
            (traj_dir / safe_name(name)).mkdir(parents=True, exist_ok=True)
            desc = f"{name} · {seq_name}"
            bar = tqdm(total=len(seq), unit="frame", desc=desc, disable=options.quiet, dynamic_ncols=True)
            with bar:
                traj = traj_dir / safe_name(name) / f"{safe_name(seq_name)}.txt"
                records, timing, health = stream_records(streamed, seq, protocol, device, traj, bar.update)
            result = evaluate_records(records, protocol, seq_name)
            result.timing, result.health = timing, health
            run.sequences.append(result)
            posed = records.has_pose
            if posed.any():
                (traj_dir / "groundtruth").mkdir(exist_ok=True)
                write_tum(traj_dir / "groundtruth" / f"{safe_name(seq_name)}.txt", records.timestamp[posed],
                          records.gt_cam2world[posed])
        model.to("cpu")
        runs.append(run)
    settings = {
        "command": options.command(),
        "data_root": options.data_root,
        "max_frames": options.max_frames,
        "device": str(device),
        "revisit": options.revisit,
        "refine": options.refine,
        "memory_horizon": options.memory_horizon,
    }
    return write_report(out, protocol, runs, settings)
