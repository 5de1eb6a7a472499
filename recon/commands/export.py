"""`recon export CKPT OUT_DIR`: a training checkpoint -> model.safetensors + config.yaml."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a training checkpoint (.ckpt) as OUT_DIR/model.safetensors + OUT_DIR/config.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a Lightning .ckpt from `recon train` (or an exported folder)")
    parser.add_argument("out_dir", help="folder to write model.safetensors and config.yaml into")
    parser.add_argument("--note", default=None, help="free text recorded in config.yaml's meta")


def main(args: argparse.Namespace) -> int:
    from recon.checkpoint import CONFIG_NAME, WEIGHTS_NAME, export_checkpoint, read_config

    out = export_checkpoint(args.checkpoint, args.out_dir, {"note": args.note} if args.note else None)
    cfg = read_config(out / CONFIG_NAME)
    size_mb = (out / WEIGHTS_NAME).stat().st_size / 2**20
    print(f"wrote {out / WEIGHTS_NAME} ({size_mb:.1f} MB, {cfg['num_parameters']:,} parameters) and "
          f"{out / CONFIG_NAME} (memory {cfg['model']['memory']['type']}, signature {cfg['signature']})")
    return 0
