"""`recon eval PROTOCOL --checkpoint A [--checkpoint B ...] --out DIR`: long-sequence drift evaluation.

Streams every sequence of a protocol (``configs/eval/<name>.yaml`` or a YAML path) once through each
checkpoint, computes pose / depth / point-cloud metrics for every prefix length and the per-frame
drift curves (``recon.eval.drift``), and writes a comparison report (``recon.eval.report``):
OUT/report.json, report.md, error_vs_length.png, per_frame_error.png, and the predicted and
ground-truth trajectories per sequence in OUT/trajectories/ (TUM format, readable by evo).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from recon.commands.argtypes import bounded_int

NAME = "eval"
HELP = "evaluate checkpoints on a drift protocol (metrics per sequence length, drift curves, report)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "protocol",
        metavar="PROTOCOL",
        nargs="?",
        help="built-in protocol name (see --list) or a protocol YAML file",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="CKPT",
        help="exported folder, .safetensors or .ckpt; repeat to compare several",
    )
    parser.add_argument(
        "--name", action="append", default=[], help="report label per --checkpoint, in order"
    )
    parser.add_argument("--out", default="outputs/eval", help="report folder (default outputs/eval)")
    parser.add_argument("--data-root", default=None, help="folder holding the protocol's dataset sequences")
    parser.add_argument(
        "--max-frames", type=bounded_int(3), default=None, help="cap every sequence (smoke runs; >= 3)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--list", action="store_true", help="list the built-in protocols and exit")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="REPORT_JSON",
        default=None,
        help="merge report.json files of one protocol (e.g. models evaluated in parallel) into --out; "
        "evaluates nothing",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _labels(args: argparse.Namespace) -> list[str]:
    from recon.errors import InputError

    if args.name and len(args.name) != len(args.checkpoint):
        raise InputError(
            f"--name: expected one per --checkpoint ({len(args.checkpoint)}), got {len(args.name)}"
        )
    names = args.name or [Path(c).stem if Path(c).suffix else Path(c).name for c in args.checkpoint]
    if len(set(names)) != len(names):
        raise InputError(f"report labels must be distinct, got {names}; pass --name for each --checkpoint")
    return names


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "sequence"


def _command(args: argparse.Namespace) -> str:
    parts = ["recon", "eval", args.protocol]
    for i, ckpt in enumerate(args.checkpoint):
        parts += ["--checkpoint", ckpt] + (["--name", args.name[i]] if args.name else [])
    parts += ["--out", args.out]
    for flag, value in (("--data-root", args.data_root), ("--max-frames", args.max_frames)):
        if value is not None:
            parts += [flag, str(value)]
    if args.device != "auto":
        parts += ["--device", args.device]
    return shlex.join(parts)


def _model_facts(model, checkpoint: str) -> dict:
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


def _list_protocols() -> int:
    from recon.eval.protocols import builtin_protocols, load_protocol

    for name in builtin_protocols():
        p = load_protocol(name)
        print(f"{name:<24} {p.dataset.format:<15} {' '.join(p.description.split())[:90]}")
    return 0


def main(args: argparse.Namespace) -> int:
    from recon.errors import InputError

    if args.list:
        return _list_protocols()
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder (expected a report folder)")
    if args.merge:
        return _merge(args)
    from tqdm import tqdm

    from recon.checkpoint import load_model
    from recon.eval.drift import evaluate_records, stream_records
    from recon.eval.protocols import load_protocol, open_sequences
    from recon.eval.report import ModelRun, write_report
    from recon.infer.session import resolve_device
    from recon.trajectory import write_tum

    if args.protocol is None:
        raise InputError("PROTOCOL: expected a built-in protocol name or a YAML file (see recon eval --list)")
    if not args.checkpoint:
        raise InputError("--checkpoint: expected at least one checkpoint to evaluate")
    if args.max_frames is not None and args.max_frames < 3:
        raise InputError(f"--max-frames: expected >= 3, got {args.max_frames}")
    protocol = load_protocol(args.protocol)
    names = _labels(args)
    device = resolve_device(args.device)
    if protocol.dataset.format != "synthetic":  # fail on missing data before loading any model
        open_sequences(protocol, args.data_root, None, args.max_frames)
    # every checkpoint is checked (loaded on the CPU) before the first sequence streams; each model
    # then visits the device alone, so several large models never share accelerator memory
    models = [load_model(c, "cpu") for c in args.checkpoint]
    out = Path(args.out)
    runs = []
    for name, ckpt, model in zip(names, args.checkpoint, models, strict=True):
        model.to(device)
        run = ModelRun(name=name, checkpoint=str(ckpt), model=_model_facts(model, str(ckpt)))
        hw = tuple(model.cfg.image_size)
        sequences = open_sequences(protocol, args.data_root, hw, args.max_frames, str(device))
        for seq_name, seq in sequences:
            traj_dir = out / "trajectories"
            (traj_dir / _safe(name)).mkdir(parents=True, exist_ok=True)
            desc = f"{name} · {seq_name}"
            with tqdm(total=len(seq), unit="frame", desc=desc, disable=args.quiet, dynamic_ncols=True) as bar:
                traj = traj_dir / _safe(name) / f"{_safe(seq_name)}.txt"
                records, timing = stream_records(model, seq, protocol, device, traj, bar.update)
            result = evaluate_records(records, protocol, seq_name)
            result.timing = timing
            run.sequences.append(result)
            posed = records.has_pose
            if posed.any():
                (traj_dir / "groundtruth").mkdir(exist_ok=True)
                write_tum(traj_dir / "groundtruth" / f"{_safe(seq_name)}.txt", records.timestamp[posed],
                          records.gt_cam2world[posed])
        model.to("cpu")
        runs.append(run)
    settings = {
        "command": _command(args),
        "data_root": args.data_root,
        "max_frames": args.max_frames,
        "device": str(device),
    }
    return _print_report(write_report(out, protocol, runs, settings), out)


def _merge(args: argparse.Namespace) -> int:
    """Merge report.json files into --out; an invalid input stops it before anything is written."""
    import json

    from recon.errors import InputError
    from recon.eval.report import merge_reports, write_report_dict

    reports = []
    for path in args.merge:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"--merge: {path} not found (expected a report.json written by recon eval)")
        try:
            reports.append((path, json.loads(p.read_text())))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"--merge: {path} is not valid JSON ({e}); expected a report.json") from None
        except OSError as e:
            raise InputError(f"--merge: {path} cannot be read ({e.strerror})") from None
    try:
        report = merge_reports(reports)
    except ValueError as e:
        raise InputError(f"--merge: {e}") from None
    out = Path(args.out)
    return _print_report(write_report_dict(out, report), out)


def _print_report(paths: dict, out: Path) -> int:
    markdown = paths["markdown"].read_text()
    table = markdown.split("## Error vs sequence length", 1)[1].split("## Per sequence", 1)[0]
    print(table.strip())
    trajectories = f"; trajectories in {out / 'trajectories'}" if (out / "trajectories").is_dir() else ""
    print(f"\nreport: {paths['markdown']} ({paths['json'].name}, {paths['length_plot'].name}, "
          f"{paths['curve_plot'].name}){trajectories}")
    return 0
