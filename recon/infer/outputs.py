"""Everything a streaming run writes to its output folder, kept valid if the run is interrupted.

Layout of OUT/:
    trajectory.txt     TUM (timestamp tx ty tz qx qy qz qw), cam2world, world = first camera; a line
                       per finished frame, flushed
    intrinsics.txt     `frame timestamp fx fy cx cy` per finished frame (pixels at model resolution)
    timing.txt         `frame latency_ms rss_mb cpu_ms` per finished frame (model step wall time,
                       process RSS, the step's CPU time on its thread)
    map.ply            fused point map, binary PLY (xyz float32, rgb uint8, confidence float32),
                       rewritten atomically after frames 1, 2, 4, ..., 32, then every 50 frames and
                       at the end
    depth/NNNNNN.npy   optional per-frame depth (float32, model units) and conf/NNNNNN.npy confidence
    summary.json       status ("running", "complete", "interrupted", "failed"), frames, fps, points,
                       settings; rewritten atomically while frames finish and at the end
    manifest.json      what this run writes (so a later ``--overwrite`` deletes exactly those files)
    .recon.lock        the folder's lock (held while a run writes it) and .recon.owner.json (who
                       holds it)

One run owns its folder (:class:`RunFolder`): a second run into the same folder fails at once and
names the holder; a folder with files of an earlier run (or of anything else) is refused unless
``overwrite``, and overwriting deletes only what the earlier run's manifest lists. A summary that
says "running" although its process is gone reads as "interrupted" (:func:`read_summary`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
from filelock import FileLock, Timeout

from recon.errors import InputError
from recon.files import LineWriter, atomic_write, write_json
from recon.infer.frames import FramePrediction
from recon.infer.pointmap import StreamingPointMap
from recon.trajectory import TumWriter

LOCK_NAME = ".recon.lock"
OWNER_NAME = ".recon.owner.json"
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "summary.json"
MANIFEST_FORMAT = "streamrecon-run-manifest/1"
# The files of a run, and the temporary siblings recon.files.atomic_write may leave after a kill.
RUN_FILES = ("trajectory.txt", "intrinsics.txt", "timing.txt", "map.ply", SUMMARY_NAME)
FRAME_DIRS = ("depth", "conf")
FRAME_FILE = re.compile(r"^\.?\d{6}(\.tmp)?\.npy$")


def _tmp_name(name: str) -> str:
    """The temporary sibling recon.files.atomic_write uses for ``name``."""
    p = Path(name)
    return f".{p.stem}.tmp{p.suffix}"


# Files that say who owns the folder, not what a run produced: a folder holding only these is empty.
_BOOKKEEPING = (LOCK_NAME, OWNER_NAME, MANIFEST_NAME, _tmp_name(OWNER_NAME), _tmp_name(MANIFEST_NAME))


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (parents too) and check it is writable; clear error otherwise."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output directory {out}: exists and is not a folder (expected a folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out}: {e.strerror}") from None
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise InputError(f"output directory {out} is not a writable folder")
    return out


_PROCESS: dict = {}


def _process_facts() -> dict:
    """pid, host and start time of this process (what :func:`process_alive` checks)."""
    if _PROCESS.get("pid") != os.getpid():
        _PROCESS.update(pid=os.getpid(), host=socket.gethostname(), started=psutil.Process().create_time())
    return dict(_PROCESS)


def process_alive(facts: dict | None) -> bool | None:
    """Is the process described by ``_process_facts()`` still running? None when it cannot be told
    (another host, or no facts recorded)."""
    if not isinstance(facts, dict) or facts.get("host") != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(facts["pid"]))
        return abs(proc.create_time() - float(facts["started"])) < 1.0  # the same process, not a reused pid
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def read_summary(out_dir: str | Path) -> dict | None:
    """A run folder's summary.json, or None without one.

    A "running" status whose process is gone (killed: no chance to write "interrupted") is returned
    as "interrupted", with ``status_note`` saying why. An unreadable summary reads as
    ``{"status": "unreadable"}``.
    """
    path = Path(out_dir) / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"status": "unreadable"}
    if not isinstance(summary, dict):
        return {"status": "unreadable"}
    if summary.get("status") == "running" and process_alive(summary.get("process")) is False:
        summary["status"] = "interrupted"
        summary["status_note"] = "the process that wrote it is gone (killed before it could say so)"
    return summary


def _describe_run(folder: Path) -> str:
    summary = read_summary(folder)
    if summary is None:
        return "no summary"
    frames = summary.get("frames")
    source = (summary.get("settings") or {}).get("source")
    parts = [f"status {summary.get('status')}"]
    if frames is not None:
        parts.append(f"{frames} frames")
    if source:
        parts.append(f"source {source}")
    return ", ".join(parts)


class RunFolder:
    """Exclusive ownership of an output folder for one run (a context manager).

    On entry: the folder is created, locked (``filelock``; a second run fails at once, naming the
    holder), checked to be empty or to hold only an earlier run's files, those files are deleted
    when ``overwrite`` (only what that run's manifest lists), and this run's manifest is written.
    On exit the lock is released.

    Args:
        out_dir: the folder.
        overwrite: replace the files of an earlier run instead of refusing.
        save_depth: the run writes depth/ and conf/.
        extra_files: other files the run writes into the folder (paths; those outside are ignored).
        option: the option that named the folder (for messages).
    """

    def __init__(
        self,
        out_dir: str | Path,
        overwrite: bool = False,
        save_depth: bool = False,
        extra_files: tuple[str | Path, ...] = (),
        option: str = "--out",
    ):
        self.dir = Path(out_dir)
        self.overwrite = overwrite
        self.save_depth = save_depth
        self.option = option
        self.extra = []
        for f in extra_files:
            if f is None:
                continue
            try:
                self.extra.append(str(Path(f).resolve().relative_to(self.dir.resolve())))
            except ValueError:
                pass  # written elsewhere: not part of this folder
        self._lock: FileLock | None = None

    # -- locking ------------------------------------------------------------------------------------
    def _holder(self) -> str:
        try:
            owner = json.loads((self.dir / OWNER_NAME).read_text())
            return (f"pid {owner['pid']} on {owner['host']} since {owner['started_utc']}: "
                    f"{owner['command']}")
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def __enter__(self) -> RunFolder:
        self.dir = prepare_output_dir(self.dir)
        lock = FileLock(str(self.dir / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise InputError(
                f"{self.option} {self.dir}: in use by another run ({self._holder()}); wait for it to "
                f"finish or choose another {self.option}"
            ) from None
        self._lock = lock
        try:
            owner = {**_process_facts(), "command": " ".join(sys.argv) or "recon",
                     "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_json(self.dir / OWNER_NAME, owner)
            self._take_over()
            self._write_manifest()
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            (self.dir / OWNER_NAME).unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    # -- previous contents ----------------------------------------------------------------------------
    def _contents(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if p.name not in _BOOKKEEPING)

    def _previous_manifest(self) -> dict | None:
        path = self.dir / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{path}: unreadable manifest; remove the folder's files yourself") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise InputError(f"{path}: not a {MANIFEST_FORMAT} manifest; remove the folder's files yourself")
        return manifest

    def _inside(self, rel: object) -> Path:
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise InputError(f"{self.dir / MANIFEST_NAME}: lists {rel!r}, not a path inside the folder")
        return self.dir / rel

    def _take_over(self) -> None:
        contents = self._contents()
        if not contents:
            return
        manifest = self._previous_manifest()
        if manifest is None:
            raise InputError(
                f"{self.option} {self.dir}: not empty ({', '.join(contents[:4])}"
                f"{', ...' if len(contents) > 4 else ''}) and not written by recon run (no "
                f"{MANIFEST_NAME}); choose a new or empty {self.option}, or remove those files yourself"
            )
        if not self.overwrite:
            raise InputError(
                f"{self.option} {self.dir}: holds the outputs of an earlier run ({_describe_run(self.dir)}); "
                f"pass --overwrite to replace them, or choose another {self.option}"
            )
        for rel in manifest.get("files", []):
            path = self._inside(rel)
            if path.is_file() or path.is_symlink():
                path.unlink()
        for rel in manifest.get("frame_dirs", []):
            folder = self._inside(rel)
            if folder.is_dir() and not folder.is_symlink():
                for p in folder.iterdir():
                    if FRAME_FILE.match(p.name) and (p.is_file() or p.is_symlink()):
                        p.unlink()
                if not any(folder.iterdir()):
                    folder.rmdir()

    def _write_manifest(self) -> None:
        files = [*RUN_FILES, *(_tmp_name(f) for f in RUN_FILES), *self.extra]
        manifest = {
            "format": MANIFEST_FORMAT,
            "tool": "recon run",
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": sorted(set(files)),
            "frame_dirs": list(FRAME_DIRS) if self.save_depth else [],
            "frame_file_pattern": FRAME_FILE.pattern,
        }
        write_json(self.dir / MANIFEST_NAME, manifest)


def map_save_due(frames: int, every: int) -> bool:
    """After ``frames`` finished frames, is map.ply due? Frames 1, 2, 4, ... below ``every``, then
    every ``every`` frames: a killed run leaves a map from its first frame on."""
    if frames < 1:
        return False
    if frames < every:
        return frames & (frames - 1) == 0
    return frames % every == 0


class RunOutputs:
    """Writers of one run. Use as a context manager; ``close()`` finalises the map and files.

    Args:
        out_dir: the run's folder (normally claimed first with :class:`RunFolder`).
        point_map: the fused map.
        save_depth: write depth/ and conf/ per frame.
        map_save_every: the period of map.ply rewrites once past the first frames.
    """

    def __init__(
        self,
        out_dir: str | Path,
        point_map: StreamingPointMap,
        save_depth: bool = False,
        map_save_every: int = 50,
    ):
        self.dir = prepare_output_dir(out_dir)
        self.map = point_map
        self.save_depth = save_depth
        self.map_save_every = map_save_every
        self.trajectory = TumWriter(self.dir / "trajectory.txt")
        self.intrinsics = LineWriter(
            self.dir / "intrinsics.txt", header="frame timestamp fx fy cx cy (pixels)"
        )
        self.timing = LineWriter(self.dir / "timing.txt", header="frame latency_ms rss_mb cpu_ms")
        if save_depth:
            for sub in FRAME_DIRS:
                (self.dir / sub).mkdir(exist_ok=True)
        self.frames_written = 0
        self.map_frames = 0  # frames in the map.ply on disk
        self.map_points = 0  # points in the map.ply on disk

    def write_frame(self, pred: FramePrediction, to_map: bool = True) -> bool:
        """Record one finished frame (the stream loop's prediction, model resolution).

        Args:
            pred: the frame's prediction (image, depth, confidence, K, cam2world, world points).
            to_map: fuse its points into the map (False for frames without usable texture).

        Returns:
            True when map.ply was rewritten after this frame.
        """
        index, timestamp, K = pred.index, pred.timestamp, pred.K
        if to_map:
            self.map.add(pred.world_points, pred.image, pred.conf, depth=pred.depth)
        if self.save_depth:
            for sub, arr in (("depth", pred.depth), ("conf", pred.conf)):
                atomic_write(
                    self.dir / sub / f"{index:06d}.npy", lambda p, a=arr: np.save(p, a.astype(np.float32))
                )
        self.intrinsics.write(
            f"{index} {timestamp:.6f} {K[0, 0]:.6f} {K[1, 1]:.6f} {K[0, 2]:.6f} {K[1, 2]:.6f}"
        )
        self.trajectory.write(timestamp, pred.cam2world)
        self.frames_written += 1
        if map_save_due(self.frames_written, self.map_save_every):
            self.save_map()
            return True
        return False

    def save_map(self) -> int:
        """Rewrite map.ply (atomically) with every frame so far; returns its point count."""
        self.map_points = self.map.save(self.dir / "map.ply")
        self.map_frames = self.frames_written
        return self.map_points

    def write_summary(self, summary: dict) -> None:
        write_json(self.dir / SUMMARY_NAME, {**summary, "process": _process_facts()})

    def close(self) -> int:
        """Flush everything; returns the number of points in the saved map."""
        self.trajectory.close()
        self.intrinsics.close()
        self.timing.close()
        return self.save_map()
