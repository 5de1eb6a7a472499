"""`recon env`: versions of the libraries streamrecon uses, devices, Triton mode."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform

NAME = "env"
HELP = "print library versions, devices and whether Triton runs compiled or interpreted"

# (import name, label) of the libraries whose versions matter for bug reports.
LIBRARIES = (
    ("torch", "torch"),
    ("triton", "triton"),
    ("lightning", "lightning"),
    ("rerun", "rerun-sdk"),
    ("open3d", "open3d"),
    ("kornia", "kornia"),
    ("cv2", "opencv"),
    ("evo", "evo"),
    ("safetensors", "safetensors"),
    ("numpy", "numpy"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def _version(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a broken optional install is reported, not raised
        return f"not available ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if module_name == "evo":
        from importlib.metadata import version

        return version("evo")
    return str(getattr(module, "__version__", "unknown"))


def collect() -> dict:
    """Environment facts as a dict (also used by bug reports and benchmark JSON)."""
    import torch

    from recon import __version__

    info: dict = {
        "streamrecon": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {label: _version(mod) for mod, label in LIBRARIES},
        "cpu_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if interpret:
        info["triton_mode"] = "interpreted (TRITON_INTERPRET=1)"
    elif torch.cuda.is_available():
        info["triton_mode"] = "compiled (CUDA)"
    else:
        info["triton_mode"] = "unavailable (no CUDA device; set TRITON_INTERPRET=1 to interpret)"
    return info


def main(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = 14
    for key in ("streamrecon", "python", "platform"):
        print(f"{key:<{width}} {info[key]}")
    for label, ver in info["libraries"].items():
        print(f"{label:<{width}} {ver}")
    devices = ", ".join(info["cuda_devices"]) or "none"
    print(f"{'cpu threads':<{width}} {info['cpu_threads']}")
    print(f"{'cuda devices':<{width}} {devices}")
    print(f"{'triton':<{width}} {info['triton_mode']}")
    return 0
