"""`recon data`: inspect datasets on disk (``check``: validate one sequence; ``formats``: list layouts)."""

from __future__ import annotations

import argparse
import json
import warnings

from recon.commands.argtypes import bounded_int

NAME = "data"
HELP = "validate a dataset sequence on disk (recon data check ROOT) or list the readable formats"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="read every frame of one sequence, print a summary and problems; exit 1 if problems were found",
    )
    check.add_argument("root", help="sequence folder (or video file / image folder) as distributed")
    check.add_argument(
        "--format", default=None, help="reader name (default: detected; see `recon data formats`)"
    )
    check.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reader option, e.g. -o sequence=110_13051_23361 -o 'K=[500,500,320,240]' "
        "(values parsed as JSON when possible)",
    )
    check.add_argument(
        "--max-frames", type=bounded_int(1), default=None, help="check at most this many frames"
    )
    check.add_argument("--stride", type=bounded_int(1), default=1, help="check every N-th frame")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser("formats", help="list the dataset formats and their on-disk layouts")


def parse_options(items: list[str]) -> dict:
    """``["k=v", ...]`` -> dict; values parsed as JSON when they parse, else kept as strings."""
    from recon.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def main(args: argparse.Namespace) -> int:
    from data import list_formats, load_sequence
    from data.readers.check import check_sequence, format_report
    from data.readers.imageio import collect_ground_truth_problems
    from recon.errors import ConfigError

    if args.data_command == "formats":
        for name, layout in list_formats().items():
            print(f"{name:<16} {layout}")
        return 0
    if args.stride < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise ConfigError("--stride and --max-frames must be positive")
    options = parse_options(args.option)
    # a broken ground-truth file of the sequence (groundtruth.txt, depth.txt) is a problem to list
    # beside the frames' own, not a reason to check nothing
    with warnings.catch_warnings(record=True) as caught, collect_ground_truth_problems() as broken:
        warnings.simplefilter("always")
        seq = load_sequence(args.root, format=args.format, **options)
    report = check_sequence(seq, max_frames=args.max_frames, stride=args.stride)
    report.notes[:0] = [str(w.message) for w in caught]
    report.problems[:0] = broken
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 1 if report.problems else 0
