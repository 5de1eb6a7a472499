"""The `recon` command line: one subcommand per module in `recon.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``.
Every user mistake ends the same way: one line ``recon COMMAND: error: ...`` naming the input and
what was expected, exit status 2, no traceback. That holds for argument errors (argparse's
messages, printed as one line by :class:`OneLineParser`) and for :class:`recon.errors.ReconError`
raised anywhere in a command. Ctrl-C, at any time (also while the libraries still load), prints
``recon COMMAND: interrupted`` and exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from recon import __version__
from recon.errors import ReconError

# Subcommands, in the order `recon --help` lists them (module names under recon.commands).
COMMANDS = ("env", "model", "synth", "run", "data", "train", "export", "export_scene", "demo", "eval")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def one_line(message: object) -> str:
    """A message as one line: its non-blank lines joined with '; ' (with ' ' after a colon)."""
    out = ""
    for line in (line.strip() for line in str(message).splitlines()):
        if line:
            out += (" " if out.endswith(":") else "; ") + line if out else line
    return out


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``PROG: error: MESSAGE (see PROG --help)``), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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


def _command_name(argv: list[str] | None) -> str:
    """The subcommand named on the command line (for messages before parsing finished)."""
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if a.replace("-", "_") in COMMANDS), "")  # export-scene: export_scene


def main(argv: list[str] | None = None) -> int:
    command = _command_name(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "_handler", None) is None:
            parser.print_help()
            return 0
        command = args.command
        return int(args._handler(args) or 0)
    except ReconError as e:
        print(f"{_prog(command)}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return _interrupted(command)
    except Exception as e:  # e.g. ImportError "initialization failed" raised from a Ctrl-C inside an import
        if not _caused_by_interrupt(e):
            raise
        return _interrupted(command)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """True when a KeyboardInterrupt is in the exception's cause / context chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _interrupted(command: str) -> int:
    # Ignore further SIGINTs from here on: a second one during shutdown would otherwise end the
    # process by signal, not with 130.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"{_prog(command)}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _prog(command: str) -> str:
    return f"recon {command}" if command else "recon"


def console_main() -> None:
    """The ``recon`` console script: :func:`main`, and exit 130 also when a second interrupt lands
    while the first is being reported (a library interrupted inside C code can leave Python's own
    SIGINT flag set, which raises again at the next bytecode)."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = _interrupted(_command_name(None))
    if code == EXIT_INTERRUPTED:
        # Leave without interpreter shutdown: an interrupt still pending there (or a library's
        # SIGINT handler restored at exit) would end the process by signal instead of with 130.
        # Everything the command wrote is closed by now (its own finally blocks ran).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
