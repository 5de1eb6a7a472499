"""The layer order and the no-cycle rule of pyproject.toml's import-linter contracts hold
(docs/layering.md): `lint-imports` from the dev extra, run on the repository."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.is_file(), "lint-imports missing: install the dev extra (pip install -e .[dev])"
    proc = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_no_source_file_edits_sys_path():
    # Tools run as modules from the repo root (python -m tools.X; tools/gpu_check.sh sets PYTHONPATH):
    # no file of the packages, tools or tests reaches the project through sys.path edits.
    import ast

    offenders = []
    for folder in ("recon", "layers", "data", "tools", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Attribute) and node.attr == "path"
                        and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
