"""`recon train {fit,validate,test} --config configs/train/<recipe>.yaml [--key value ...]`: LightningCLI."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = ("train / validate / test a model with a YAML recipe (LightningCLI); "
        "see `recon train fit --help` and docs/training.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    recipe = "configs/train/tiny_synthetic_cpu.yaml"
    parser.epilog = ("examples:\n"
                     f"  recon train fit --config {recipe}\n"
                     f"  recon train fit --config {recipe} --model.net.memory.type ttt\n"
                     f"  recon train fit --config {recipe} --ckpt_path last\n"
                     f"  recon train validate --config {recipe} --ckpt_path CKPT")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("cli_args", nargs=argparse.REMAINDER, metavar="fit|validate|test ...",
                        help="a LightningCLI subcommand and its arguments")


def main(args: argparse.Namespace) -> int:
    from recon.train.cli import run_cli

    return run_cli(list(args.cli_args))
