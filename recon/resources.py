"""Where the package's data files are, installed or in a source tree.

The YAML presets and recipes live in ``configs/`` at the repository root. A wheel carries the same
tree as ``recon/configs/`` (copied there at build time by ``tools/build_py.py``, the build_py
command that pyproject.toml names), so a non-editable install finds presets by name from any
folder; an editable install or a source checkout reads the repository's ``configs/``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "configs"
_SOURCE_TREE = Path(__file__).resolve().parents[1] / "configs"


def config_dir() -> Path:
    """The folder of the shipped YAML configs (``model/``, ``eval/``, ``train/``, ``data/``)."""
    return _PACKAGED if _PACKAGED.is_dir() else _SOURCE_TREE
