"""`recon export CKPT OUT_DIR`: a training checkpoint -> model.safetensors + config.yaml."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a training checkpoint (.ckpt) as OUT_DIR/model.safetensors + OUT_DIR/config.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a Lightning .ckpt from `recon train` (or an exported folder)")
    parser.add_argument("out_dir", help="folder to write model.safetensors and config.yaml into")
    parser.add_argument("--note", default=None, help="free text recorded in config.yaml's meta")


def _check_out_dir(out_dir: str) -> None:
    """OUT_DIR must be a folder (new, or one to replace model.safetensors / config.yaml in)."""
    import os
    from pathlib import Path

    from recon.errors import InputError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"OUT_DIR {out}: exists and is not a folder (expected a folder to write "
                         "model.safetensors and config.yaml into)")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"OUT_DIR {out}: cannot be created ({parent} is not a writable folder)")


def main(args: argparse.Namespace) -> int:
    from recon.checkpoint import CONFIG_NAME, WEIGHTS_NAME, export_checkpoint, read_config

    _check_out_dir(args.out_dir)
    out = export_checkpoint(args.checkpoint, args.out_dir, {"note": args.note} if args.note else None)
    cfg = read_config(out / CONFIG_NAME)
    size_mb = (out / WEIGHTS_NAME).stat().st_size / 2**20
    print(f"wrote {out / WEIGHTS_NAME} ({size_mb:.1f} MB, {cfg['num_parameters']:,} parameters) and "
          f"{out / CONFIG_NAME} (memory {cfg['model']['memory']['type']}, signature {cfg['signature']})")
    return 0
