"""Compile the gated delta rule's Triton kernels for a CUDA architecture on a machine without a GPU.

The Triton interpreter (what the CPU tests run) executes the kernels' Python; it does not run the
compiler, so a kernel can pass every interpreted test and still fail to compile, or need more shared
memory than a GPU has. This tool runs Triton's whole compile pipeline (TTIR -> TTGIR -> LLVM -> PTX ->
cubin with the ptxas that ships with Triton) for a target such as sm_90 (H100 / H200), with the same
launch options as ``layers/ops/gated_delta/triton.py``, and checks each kernel's shared memory
against the architecture's per-block limit. No GPU and no CUDA driver are needed.

Usage:
    .venv/bin/python -m tools.triton_compile_check          # K = V = 64 and 128, chunk 64, sm_90
    .venv/bin/python -m tools.triton_compile_check --head-dim 32 --chunk-size 32 --json out.json

(from the repo root, as a module, or with the root on ``PYTHONPATH``).

Exit status 0 when every kernel compiled within the limit, 1 otherwise (one line per kernel either way).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for real: before the kernels' module is imported

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from layers.ops.gated_delta import triton as kernels  # noqa: E402

SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
"""Largest shared memory per block (bytes, opt-in) by compute capability (CUDA programming guide)."""
SCAN_KERNELS = ("_gd_fwd_state_kernel", "_gd_bwd_state_kernel")
KERNELS = ("_gd_fwd_scores_kernel", "_gd_fwd_solve_kernel", "_gd_fwd_state_kernel", "_gd_fwd_output_kernel",
           "_gd_bwd_state_kernel", "_gd_bwd_chunk_kernel", "_gd_bwd_pairs_kernel")
SCALARS = {"scale": "fp32", "T": "i32", "TP": "i32", "N": "i32"}


def compile_kernel(name: str, head_dim: int, chunk_size: int, arch: int) -> dict:
    """Compile one kernel: a row with "kernel", "head_dim", "chunk_size", "arch", "options", "ok",
    "shared_bytes", "seconds" and "error" (None when it compiled within the limit)."""
    fn = getattr(kernels, name)
    BK = BV = max(16, triton.next_power_of_2(head_dim))
    par, scan = kernels._launch(BK, BV)
    options = scan if name in SCAN_KERNELS else par
    BV_kernel = min(BV, kernels.SCAN_VALUE_TILE) if name in SCAN_KERNELS else BV  # as launched
    constants = {"K": head_dim, "V": head_dim, "BT": chunk_size, "BC": kernels.SUB_CHUNK,
                 "NS": chunk_size // kernels.SUB_CHUNK, "BK": BK, "BV": BV_kernel, "PRECISION": "ieee",
                 "USE_H0": True, "STORE_FINAL": True, "USE_DHT": True, "STORE_DH0": True}
    signature, constexprs = {}, {}
    for param in fn.params:
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[param.name] = constants[param.name]
        else:
            signature[param.name] = SCALARS.get(param.name, "*fp32")
    row = {"kernel": name, "head_dim": head_dim, "chunk_size": chunk_size, "arch": f"sm_{arch}",
           "options": options, "ok": False, "shared_bytes": None, "error": None}
    start = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", arch, 32), options=options)
        row["shared_bytes"] = compiled.metadata.shared
        limit = SHARED_LIMIT.get(arch)
        if limit is not None and row["shared_bytes"] > limit:
            row["error"] = f"needs {row['shared_bytes']} bytes of shared memory, sm_{arch} has {limit}"
        else:
            row["ok"] = True
    except Exception as exc:  # noqa: BLE001 - any compile failure is what this tool reports
        lines = str(exc).strip().splitlines()
        row["error"] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    row["seconds"] = time.perf_counter() - start
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dim", type=int, nargs="+", default=[64, kernels.MAX_HEAD_DIM],
                        help="K = V values to compile for")
    parser.add_argument("--chunk-size", type=int, nargs="+", default=[64], help="chunk sizes (16 to 64)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100/H200), 80")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for head_dim in args.head_dim:
        for chunk_size in args.chunk_size:
            for name in KERNELS:
                row = compile_kernel(name, head_dim, chunk_size, args.arch)
                rows.append(row)
                status = "ok" if row["ok"] else "FAILED"
                shared = f"{row['shared_bytes']} B shared" if row["shared_bytes"] is not None else ""
                print(f"{status:6s} {name:24s} K=V={head_dim:<4d} C={chunk_size:<3d} sm_{args.arch} "
                      f"{shared:16s} {row['seconds']:5.1f} s {row['error'] or ''}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
