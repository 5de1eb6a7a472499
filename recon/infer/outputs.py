"""Everything a streaming run writes to its output folder, kept valid if the run is interrupted.

Layout of OUT/:
    trajectory.txt     TUM (timestamp tx ty tz qx qy qz qw), cam2world, world = first camera; a line
                       per finished frame, flushed
    intrinsics.txt     `frame timestamp fx fy cx cy` per finished frame (pixels at model resolution)
    timing.txt         `frame latency_ms rss_mb` per finished frame (model step time, process RSS)
    map.ply            fused point map, binary PLY (xyz float32, rgb uint8, confidence float32),
                       rewritten atomically every few frames and at the end
    depth/NNNNNN.npy   optional per-frame depth (float32, model units) and conf/NNNNNN.npy confidence
    summary.json       status ("running", "complete", "interrupted", "failed"), frames, fps, points,
                       settings; rewritten atomically
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.files import LineWriter, atomic_write, write_json
from recon.infer.pointmap import StreamingPointMap
from recon.trajectory import TumWriter


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (parents too) and check it is writable; clear error otherwise."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out}: {e.strerror}") from None
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise InputError(f"output directory {out} is not a writable folder")
    return out


class RunOutputs:
    """Writers of one run. Use as a context manager; ``close()`` finalises the map and files."""

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
        # Stale results of an earlier run would look like ours: remove the files we own.
        for name in ("trajectory.txt", "intrinsics.txt", "timing.txt", "map.ply", "summary.json"):
            (self.dir / name).unlink(missing_ok=True)
        self.trajectory = TumWriter(self.dir / "trajectory.txt")
        self.intrinsics = LineWriter(
            self.dir / "intrinsics.txt", header="frame timestamp fx fy cx cy (pixels)"
        )
        self.timing = LineWriter(self.dir / "timing.txt", header="frame latency_ms rss_mb")
        if save_depth:
            (self.dir / "depth").mkdir(exist_ok=True)
            (self.dir / "conf").mkdir(exist_ok=True)
        self.frames_written = 0

    def write_frame(
        self,
        index: int,
        timestamp: float,
        image: np.ndarray,
        depth: np.ndarray,
        conf: np.ndarray,
        K: np.ndarray,
        cam2world: np.ndarray,
        world_points: np.ndarray,
    ) -> None:
        """Record one finished frame (numpy arrays at model resolution)."""
        self.map.add(world_points, image, conf, depth=depth)
        if self.save_depth:
            for sub, arr in (("depth", depth), ("conf", conf)):
                atomic_write(
                    self.dir / sub / f"{index:06d}.npy", lambda p, a=arr: np.save(p, a.astype(np.float32))
                )
        self.intrinsics.write(
            f"{index} {timestamp:.6f} {K[0, 0]:.6f} {K[1, 1]:.6f} {K[0, 2]:.6f} {K[1, 2]:.6f}"
        )
        self.trajectory.write(timestamp, cam2world)
        self.frames_written += 1
        if self.frames_written % self.map_save_every == 0:
            self.map.save(self.dir / "map.ply")

    def write_summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)

    def close(self) -> int:
        """Flush everything; returns the number of points in the saved map."""
        self.trajectory.close()
        self.intrinsics.close()
        self.timing.close()
        return self.map.save(self.dir / "map.ply")
