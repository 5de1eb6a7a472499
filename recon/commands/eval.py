"""`recon eval PROTOCOL --checkpoint A [--checkpoint B ...] --out DIR`: long-sequence drift evaluation.

Streams every sequence of a protocol (``configs/eval/<name>.yaml`` or a YAML path) once through each
checkpoint, computes pose / depth / point-cloud metrics for every prefix length and the per-frame
drift curves (``recon.eval.drift``), and writes a comparison report (``recon.eval.report``):
OUT/report.json, report.md, error_vs_length.png, per_frame_error.png, and the predicted and
ground-truth trajectories per sequence in OUT/trajectories/ (TUM format, readable by evo).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--no-revisit", dest="revisit", action="store_false",
                        help="no pose corrections at revisited places: evaluate the window odometry alone")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="no geometric refinement of the window poses and no self-calibration "
                             "(focal length, depth contrast): evaluate the camera trunk's poses")
    parser.add_argument("--memory-horizon", type=bounded_int(1), default=None, metavar="N",
                        help="diagnostic: empty the memory layers every N frames (1 = no earlier frame "
                             "reaches them), to measure how far back a model uses its memory")


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
    from recon.eval.evaluation import EvalOptions, evaluate_checkpoints

    options = EvalOptions(protocol=args.protocol, checkpoints=list(args.checkpoint), names=list(args.name),
                          out=args.out, data_root=args.data_root, max_frames=args.max_frames,
                          device=args.device, quiet=args.quiet, revisit=args.revisit,
                          refine=args.refine, memory_horizon=args.memory_horizon)
    return _print_report(evaluate_checkpoints(options), Path(args.out))


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
