"""setuptools build_py that ships the repository's ``configs/`` inside the package as ``recon/configs``.

pyproject.toml names it (``[tool.setuptools.cmdclass]``): the YAML presets and recipes stay where
they are in the repository, and a wheel (``pip install .``, ``python -m build``) still carries
them, so ``recon`` finds ``tiny`` by name when installed (:func:`recon.resources.config_dir`). The
files are also listed as sources, so an sdist carries ``configs/`` too. Editable installs read the
repository's ``configs/`` directly and copy nothing.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py as _build_py

CONFIGS = Path("configs")
TARGET = Path("recon") / "configs"


def _config_files() -> list[Path]:
    files = sorted(p for p in CONFIGS.rglob("*.yaml") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{CONFIGS.resolve()}: no YAML configs to package "
                                "(expected configs/**/*.yaml)")
    return files


class build_py(_build_py):  # noqa: N801  (setuptools command names are lower case)
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for src in _config_files():
            dst = Path(self.build_lib) / TARGET / src.relative_to(CONFIGS)
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))

    def get_source_files(self) -> list[str]:
        return [*super().get_source_files(), *(str(p) for p in _config_files())]
