"""Files that stay valid when a run is interrupted: atomic replace and line-flushed text."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary sibling and ``os.replace`` it into place.

    A reader (or a run killed mid-write) sees either the previous complete file or the new one,
    never a half-written file. ``write(tmp_path)`` must create ``tmp_path``; its suffix is kept so
    libraries that pick a format from the extension (open3d, numpy) still do. The file gets the
    mode a plain ``open(path, "w")`` would give (0666 less the umask), also when the library wrote
    it private (safetensors' ``save_file`` creates 0600 files).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process umask: Linux's ``/proc/self/status``, else set and put back (POSIX has no getter)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_folder(path: str | Path, write: Callable[[Path], None]) -> None:
    """Create the folder ``path`` through a temporary sibling folder renamed into place.

    ``write(tmp_folder)`` fills an empty folder; a reader (or an interrupted writer) sees the
    previous folder or the new, complete one, never a half-written one. A folder already at ``path``
    is replaced (renamed aside, then deleted).
    """
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp", dir=path.parent))
    old = None
    try:
        write(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)


def write_json(path: str | Path, data: dict) -> None:
    """Atomically write ``data`` as indented JSON."""

    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")

    atomic_write(path, _write)


class LineWriter:
    """A text file written one flushed line at a time (valid up to the last full line)."""

    def __init__(self, path: str | Path, header: str | None = None):
        self.path = Path(path)
        self._f = open(self.path, "w", buffering=1)  # line buffered
        if header:
            for line in header.splitlines():
                self._f.write(f"# {line}\n")
        self._f.flush()

    def write(self, line: str) -> None:
        self._f.write(line.rstrip("\n") + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
