"""`recon model info CONFIG`: parameter counts per component, memory layers, tokens and state size."""

from __future__ import annotations

import argparse
import json

from layers.registry import MEMORY_TYPES

NAME = "model"
HELP = "inspect a model config: parameter counts per component, memory types and depths, state size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="parameter counts per component and the memory layout",
                          description="Print parameter counts per component of a model config.")
    info.add_argument("config", help="preset name (tiny, small, base, large) or path to a model YAML")
    info.add_argument("--memory", default=None,
                      help=f"override memory.type ({', '.join(MEMORY_TYPES)}); the options of each "
                           "type and their defaults are printed below the layout")
    info.add_argument("--json", action="store_true", help="print as JSON")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config: str, memory_type: str | None = None) -> dict:
    """Facts about a model config, built on the meta device (no memory is allocated)."""
    import torch

    from recon.model import build_model, load_model_config

    overrides = {"memory": {"type": memory_type}} if memory_type else {}
    cfg = load_model_config(config, **overrides)
    with torch.device("meta"):
        model = build_model(cfg)
        state = model.init_state(1, device="meta")
    agg = model.aggregator
    components = {
        "embedding": _count(agg.embed),
        "frame_blocks": _count(agg.frame_blocks),
        "local_blocks": _count(agg.local_blocks),
        "memory_blocks": _count(agg.memory_blocks),
        "final_norm": _count(agg.norm),
        "dense_head": _count(model.dense_head),
        "camera_trunk": _count(model.camera_trunk),
        "metric_readout": _count(model.metric_readout),
    }
    return {
        "name": cfg.name,
        "signature": model.signature,
        "image_size": list(cfg.image_size),
        "patch_size": cfg.patch_size,
        "tokens_per_frame": agg.num_tokens,
        "dim": cfg.dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "window": cfg.window,
        "memory": {"type": cfg.memory.type, "depths": list(cfg.memory.depths),
                   "num_heads": cfg.memory.num_heads or cfg.num_heads,
                   "options": cfg.memory.options.kwargs(), "options_set": cfg.memory.options.changed()},
        "parameters": components,
        "total_parameters": _count(model),
        "initial_state_bytes_per_sequence": state.nbytes(),
    }


def main(args: argparse.Namespace) -> int:
    info = describe(args.config, args.memory)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model {info['name']} (signature {info['signature']})")
    print(f"  frames {info['image_size'][0]}x{info['image_size'][1]}, patch {info['patch_size']}, "
          f"{info['tokens_per_frame']} tokens/frame, dim {info['dim']}, {info['depth']} blocks, "
          f"{info['num_heads']} heads, local window {info['window']} frames")
    mem = info["memory"]
    print(f"  memory: {mem['type']} after blocks {mem['depths']} ({mem['num_heads']} heads)"
          + (f", options {mem['options_set']}" if mem["options_set"] else ""))
    if mem["options"]:
        print("  memory options: " + ", ".join(f"{k}={v!r}" for k, v in mem["options"].items()))
    print(f"  {'component':<16}{'parameters':>14}")
    for name, n in info["parameters"].items():
        print(f"  {name:<16}{n:>14,}")
    print(f"  {'total':<16}{info['total_parameters']:>14,}")
    mib = info["initial_state_bytes_per_sequence"] / 2**20
    print(f"  streaming state at frame 0: {mib:.2f} MiB per sequence")
    return 0
