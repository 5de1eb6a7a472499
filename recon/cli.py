"""The `recon` command line: one subcommand per module in `recon.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``.
User errors (:class:`recon.errors.ReconError`) print one line and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from recon import __version__
from recon.errors import ReconError

# Subcommands, in the order `recon --help` lists them (module names under recon.commands).
COMMANDS = ("env", "model", "synth", "run", "data", "train", "export", "demo", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recon",
        description="streamrecon: streaming 3D reconstruction from video (depth, poses, points).",
    )
    parser.add_argument("--version", action="version", version=f"streamrecon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"recon.commands.{name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_handler", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._handler(args) or 0)
    except ReconError as e:
        print(f"recon {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
