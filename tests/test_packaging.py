"""The wheel works outside the repository: built from a copy of the source tree (non-editable), installed
into a fresh virtual environment, and run from an unrelated folder, it builds ``tiny`` by name, runs
the default job (``recon demo``) and exports the result (``recon export-scene``).

The fresh venv gets the package from the wheel alone; its third-party dependencies (torch, open3d,
rerun, ...) come from this test's own environment through a path entry in a ``.pth`` file (a plain
path: the editable install's finder in that environment is not loaded), so the test needs no network
and no second copy of torch (a fresh machine installing every dependency is what ``make setup`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TREE = ("pyproject.toml", "README.md", "recon", "layers", "data", "configs", "tools")


def _copy_source(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dst.mkdir(parents=True)
    for name in TREE:
        src = REPO / name
        (shutil.copytree(src, dst / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, dst / name))
    return dst


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (non-editable); returns its bin/ folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = _copy_source(root / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(src)], check=True, cwd=src)
    (wheel,) = (root / "dist").glob("streamrecon-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies: this environment's site-packages, as a plain path (its .pth files stay unread)
    Path(site, "deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                    str(wheel)], check=True)
    return env_dir / "bin"


def _recon(bin_dir: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([str(bin_dir / "recon"), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_wheel_carries_the_configs_and_checkpoint(installed):
    (wheel,) = installed.parent.parent.glob("dist/streamrecon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in Path(REPO, "configs").rglob("*.yaml"):
        assert f"recon/configs/{rel.relative_to(REPO / 'configs').as_posix()}" in names
    assert "recon/assets/checkpoints/tiny/model.safetensors" in names
    assert not any(n.startswith(("tools/", "tests/", "configs/")) for n in names)


# A small untrained model, exported by the installed package from its own packaged preset.
SMALL_MODEL = """
import sys, torch, yaml
from recon.checkpoint import save_weights
from recon.model import build_model
from recon.resources import config_dir
cfg = yaml.safe_load((config_dir() / "model" / "tiny.yaml").read_text())
cfg.update(dim=64, depth=2, num_heads=2, window=2)
cfg["memory"] = {"type": "none", "depths": [], "options": {}}
cfg["head"].update(features=16, levels=[0, 1], camera_hidden=64, pose_slots=1)
torch.manual_seed(0)
save_weights(build_model(cfg), sys.argv[1])
"""


def _elsewhere(tmp_path: Path) -> tuple[Path, dict]:
    where = tmp_path / "elsewhere"
    where.mkdir()
    return where, {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_installed_wheel_runs_from_another_folder(installed, tmp_path):
    where, env = _elsewhere(tmp_path)
    origin = subprocess.run([str(installed / "python"), "-c", "import recon, recon.resources as r; "
                             "print(recon.__file__); print(r.config_dir())"],
                            cwd=where, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(installed.parent)) for p in origin), origin  # the wheel, not the repo
    info = _recon(installed, where, "model", "info", "tiny", "--json")
    assert json.loads(info.stdout)["name"] == "tiny"
    subprocess.run([str(installed / "python"), "-c", SMALL_MODEL, "small"], cwd=where, env=env, check=True)
    _recon(installed, where, "demo", "--frames", "20", "--out", "demo", "--quiet", "--checkpoint", "small")
    summary = json.loads((where / "demo" / "demo_summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 20 and summary["points"] > 0
    export = _recon(installed, where, "export-scene", "demo/run", "--format", "colmap", "--out", "colmap")
    assert "20 images" in export.stdout
    assert sorted(p.name for p in (where / "colmap").iterdir()) == ["cameras.txt", "images.txt",
                                                                    "points3D.txt"]


def test_installed_wheel_runs_the_default_job_with_the_shipped_model(installed, tmp_path):
    """`recon demo` as a new user runs it: the checkpoint shipped inside the wheel."""
    where, _ = _elsewhere(tmp_path)
    _recon(installed, where, "demo", "--frames", "20", "--out", "demo", "--quiet")
    summary = json.loads((where / "demo" / "demo_summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 20
    assert summary["settings"]["checkpoint"].startswith(str(installed.parent))
