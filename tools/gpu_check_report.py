"""Helpers of tools/gpu_check.sh: the environment probe and the one JSON report of all sections.

``env``: where the check runs (python, torch, CUDA device, Triton and whether it is interpreted, the
imports the sections need, git commit); in ``--mode gpu`` it fails unless torch sees a CUDA device.

``assemble``: reads the section records tools/gpu_check.sh left in a work folder (``NAME.meta``:
``key=value`` lines; ``NAME.log``; ``NAME.result.json``; ``NAME.junit.xml`` for pytest sections) and
writes one JSON file (atomically): ``{"ok", "failed_sections", "mode", ..., "sections": {NAME:
{"status", "wall_s", "rc", "command", "result", ...}}}``. Exit status 1 when any section failed.
Only the standard library is needed here, so a report is written even when torch is broken.

Usage (from tools/gpu_check.sh):
    python -m tools.gpu_check_report env --mode gpu --out WORK/env.result.json
    python -m tools.gpu_check_report assemble --work WORK --out gpu_check.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAILED = ("failed", "timeout", "not_run")


def _run(cmd: list[str]) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def probe_env(mode: str) -> dict:
    info: dict = {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": _run(["git", "rev-parse", "HEAD"]),
        "git_dirty_files": None,
        "nvidia_smi": _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"]),
    }
    status = _run(["git", "status", "--porcelain"])
    if status is not None:
        info["git_dirty_files"] = len(status.splitlines())
    imports = {}
    for mod in ("torch", "triton", "pytest", "yaml", "kornia", "psutil", "recon.model", "layers.ops.gla"):
        try:
            m = importlib.import_module(mod)
            imports[mod] = getattr(m, "__version__", "ok")
        except Exception as exc:  # noqa: BLE001 - any import failure is what we report
            imports[mod] = f"error: {type(exc).__name__}: {exc}"
    info["imports"] = imports
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda_version"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["cuda_device"] = p.name
        info["cuda_capability"] = f"{p.major}.{p.minor}"
        info["cuda_memory_gib"] = p.total_memory / 2**30
        info["cuda_multiprocessors"] = p.multi_processor_count
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    info["triton_mode"] = ("interpreted" if interpret else "compiled (CUDA)" if info["cuda_available"]
                           else "unavailable (no CUDA, not interpreted)")
    missing = [m for m, v in imports.items() if str(v).startswith("error")]
    problems = []
    if mode == "gpu" and not info["cuda_available"]:
        problems.append("mode gpu, but torch sees no CUDA device")
    if mode == "gpu" and interpret:
        problems.append("mode gpu, but TRITON_INTERPRET=1 (kernels would be interpreted)")
    if missing:
        problems.append("imports failed: " + ", ".join(missing))
    info["problems"] = problems
    return info


def _junit_counts(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failing = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failing.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return {
        "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
        "failed": n["failures"],
        "errors": n["errors"],
        "skipped": n["skipped"],
        "tests": n["tests"],
        "failing_tests": failing[:50],
        "pytest_time_s": sum(float(s.get("time", 0) or 0) for s in suites),
    }


def _finite(obj):
    """NaN/inf -> None, so the report is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _read_meta(path: Path) -> dict:
    meta = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k] = v
    return meta


def _tail(path: Path, chars: int) -> str | None:
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    return text[-chars:]


def section_record(work: Path, name: str) -> dict:
    meta = _read_meta(work / f"{name}.meta")
    status = meta.get("status", "not_run")
    rec: dict = {"status": status}
    if "start" in meta and "end" in meta:
        rec["wall_s"] = round(float(meta["end"]) - float(meta["start"]), 3)
    for key in ("rc", "timeout_s"):
        if meta.get(key, "") != "":
            rec[key] = int(float(meta[key]))
    for key in ("required", "reason", "command", "triton_interpret"):
        if meta.get(key):
            rec[key] = meta[key]
    rec["required"] = meta.get("required") == "1"
    junit = work / f"{name}.junit.xml"
    result = work / f"{name}.result.json"
    try:
        if junit.exists():
            rec["result"] = _junit_counts(junit)
            if status == "ok" and meta.get("need_pass") == "1" and rec["result"]["passed"] == 0:
                rec["status"] = "failed"
                rec["reason"] = "no test passed (all skipped or deselected)"
        elif result.exists():
            rec["result"] = json.loads(result.read_text())
    except (OSError, ValueError, ET.ParseError) as exc:
        rec["result_error"] = f"{type(exc).__name__}: {exc}"
        if status == "ok":
            rec["status"] = "failed"
    probe = work / f"{name}.probe.json"  # pytest sections: how the kernels really ran (gpu_check_probe)
    if probe.exists():
        try:
            rec["kernels"] = json.loads(probe.read_text())
        except ValueError as exc:
            rec["kernels"] = {"error": str(exc)}
        mode = _read_meta(work / "run.meta").get("mode") if (work / "run.meta").exists() else None
        if mode == "gpu" and rec["kernels"].get("triton_mode") != "compiled (CUDA)" and rec["status"] == "ok":
            rec["status"] = "failed"
            rec["reason"] = f"kernels were not compiled on CUDA: {rec['kernels']}"
    if status == "skipped" and rec["required"]:
        rec["status"] = "not_run"
    log = work / f"{name}.log"
    lines = [x for x in (log.read_text(errors="replace").splitlines() if log.exists() else []) if x.strip()]
    if lines:
        rec["last_line"] = lines[-1][-300:]
    if rec["status"] in FAILED:
        rec["log_tail"] = _tail(log, 4000)
    return rec


def assemble(work: Path, out: Path) -> int:
    order = [x for x in (work / "order").read_text().split() if x] if (work / "order").exists() else []
    top = _read_meta(work / "run.meta") if (work / "run.meta").exists() else {}
    sections = {name: section_record(work, name) for name in order}
    failed = [n for n, r in sections.items() if r["status"] in FAILED]
    report = {
        "gpu_check": 1,
        "ok": not failed and bool(sections),
        "failed_sections": failed,
        "mode": top.get("mode"),
        "python": top.get("python"),
        "python_source": top.get("python_source"),
        "budget_s": float(top["budget_s"]) if top.get("budget_s") else None,
        "started_utc": top.get("started_utc"),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_wall_s": (round(time.time() - float(top["start"]), 3) if top.get("start") else None),
        "checks_wall_s": (round(time.time() - float(top["checks_start"]), 3)
                          if top.get("checks_start") else None),
        "sections": sections,
    }
    for pre in ("wheels", "setup"):  # steps before the budgeted checks, when they ran
        if (work / f"{pre}.meta").exists():
            report[pre] = section_record(work, pre)
    text = json.dumps(_finite(report), indent=2, allow_nan=False) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    width = max((len(n) for n in sections), default=8)
    for n, r in sections.items():
        print(f"  {n:<{width}}  {r['status']:<8} {r.get('wall_s', 0):7.1f} s  {r.get('reason', '')}")
    print(f"gpu_check: {'OK' if report['ok'] else 'FAILED: ' + ', '.join(failed)} -> {out}")
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_env = sub.add_parser("env", help="probe the environment, write JSON")
    p_env.add_argument("--mode", choices=("gpu", "cpu-smoke"), required=True)
    p_env.add_argument("--out", type=Path, required=True)
    p_asm = sub.add_parser("assemble", help="merge the section records into one JSON report")
    p_asm.add_argument("--work", type=Path, required=True)
    p_asm.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "env":
        info = probe_env(args.mode)
        args.out.write_text(json.dumps(info, indent=2) + "\n")
        for p in info["problems"]:
            print(f"error: {p}", file=sys.stderr)
        print(json.dumps({k: info.get(k) for k in ("torch", "cuda_device", "triton_mode")}))
        return 1 if info["problems"] else 0
    return assemble(args.work, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
