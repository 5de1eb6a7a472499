"""The memory ablation's arms (``configs/ablation/arms.yaml``): list them, or print the training
arguments of one, checked against the memory registry.

    python -m tools.ablation_arms list               # arm names, one a line
    python -m tools.ablation_arms args gla_plain     # --model.net.memory.type / .options, one a line

An unknown arm, an unknown memory type or option, or options that do not fit together exit 2 with
one line naming what is wrong and what is valid (the same check ``recon train fit`` makes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from layers.registry import MEMORY_TYPES, parse_memory_options
from recon.errors import ConfigError

ARMS_FILE = Path(__file__).resolve().parents[1] / "configs" / "ablation" / "arms.yaml"


def load_arms(path: str | Path = ARMS_FILE) -> dict[str, dict]:
    """Arm name -> {"type": ..., "options": {...}}, every arm's options parsed by the registry.

    Raises:
        ConfigError: a malformed file, an unknown type or option, or options that do not fit.
    """
    data = yaml.safe_load(Path(path).read_text())
    arms = data.get("arms") if isinstance(data, dict) else None
    if not isinstance(arms, dict) or not arms:
        raise ConfigError(f"{path}: expected a mapping 'arms: {{name: {{type, options}}}}'")
    out = {}
    for name, arm in arms.items():
        if not isinstance(arm, dict) or set(arm) - {"type", "options"} or "type" not in arm:
            raise ConfigError(f"{path}: arms.{name}: expected {{type: ..., options: {{...}}}}, got {arm!r}")
        if arm["type"] not in MEMORY_TYPES:
            raise ConfigError(f"{path}: arms.{name}.type: unknown memory type {arm['type']!r}; expected one "
                              f"of {', '.join(MEMORY_TYPES)}")
        options = arm.get("options") or {}
        parse_memory_options(arm["type"], options, where=f"{path}: arms.{name}.options")
        out[str(name)] = {"type": arm["type"], "options": options}
    return out


def train_args(arm: dict) -> list[str]:
    """The ``recon train fit`` arguments of one arm (no options argument when it sets none)."""
    args = ["--model.net.memory.type", arm["type"]]
    if arm["options"]:
        args += ["--model.net.memory.options", json.dumps(arm["options"], separators=(",", ":"))]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ablation_arms", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["list", "args"])
    parser.add_argument("arm", nargs="?")
    parser.add_argument("--arms", default=str(ARMS_FILE), help="arms file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        arms = load_arms(args.arms)
    except ConfigError as e:
        print(f"ablation_arms: error: {e}", file=sys.stderr)
        return 2
    if args.what == "list":
        print("\n".join(arms))
        return 0
    if args.arm not in arms:
        print(f"ablation_arms: error: unknown arm {args.arm!r}; expected one of: {' '.join(arms)}",
              file=sys.stderr)
        return 2
    print("\n".join(train_args(arms[args.arm])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
