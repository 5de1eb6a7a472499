"""A fused world point cloud of bounded size, voxel-downsampled with open3d.

Points arrive per frame (world frame = the first camera, OpenCV axes, model units), are filtered by
confidence, buffered, and merged into the map by voxel downsampling every few frames. When the map
outgrows ``max_points`` the voxel grows by ``growth``, so memory stays flat on 10,000+ frame runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import open3d as o3d

from recon.errors import InputError
from recon.files import atomic_write

# A valid PLY of no points with the map's properties (a map of only blank frames is empty).
EMPTY_PLY = (
    b"ply\nformat binary_little_endian 1.0\ncomment Created by streamrecon (empty map)\nelement vertex 0\n"
    b"property float x\nproperty float y\nproperty float z\nproperty uchar red\nproperty uchar green\n"
    b"property uchar blue\nproperty float confidence\nend_header\n"
)


def _tensor_cloud(points: np.ndarray, colors: np.ndarray, conf: np.ndarray) -> o3d.t.geometry.PointCloud:
    cloud = o3d.t.geometry.PointCloud()
    cloud.point.positions = o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32))
    cloud.point.colors = o3d.core.Tensor(np.ascontiguousarray(colors, dtype=np.uint8))
    cloud.point.confidence = o3d.core.Tensor(np.ascontiguousarray(conf, dtype=np.float32).reshape(-1, 1))
    return cloud


class StreamingPointMap:
    """Bounded fused point map.

    Args:
        voxel_size: initial voxel edge in model units; None = 1/100 of the first frame's median
            depth (the model's scale is relative, so a fixed metric size would be meaningless).
        max_points: upper bound on the map size after each merge.
        conf_quantile: per frame, drop points whose confidence is below this quantile (0 keeps all).
        merge_every: merge the buffered frames into the map every this many frames.
        growth: factor applied to the voxel size whenever the map exceeds ``max_points``.
    """

    def __init__(
        self,
        voxel_size: float | None = None,
        max_points: int = 500_000,
        conf_quantile: float = 0.3,
        merge_every: int = 32,
        growth: float = 1.25,
    ):
        if voxel_size is not None and not (math.isfinite(voxel_size) and voxel_size > 0):
            raise InputError(f"voxel size: expected a finite number > 0, got {voxel_size}")
        if not 0.0 <= conf_quantile < 1.0:
            raise InputError(f"confidence quantile must be in [0, 1), got {conf_quantile}")
        if max_points < 1 or merge_every < 1 or not (math.isfinite(growth) and growth > 1.0):
            raise InputError(
                "need max_points >= 1, merge_every >= 1, growth > 1; "
                f"got {max_points}, {merge_every}, {growth}"
            )
        self.voxel_size = voxel_size
        self.max_points = max_points
        self.conf_quantile = conf_quantile
        self.merge_every = merge_every
        self.growth = growth
        self._map: o3d.t.geometry.PointCloud | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(
        self, points: np.ndarray, colors: np.ndarray, conf: np.ndarray, depth: np.ndarray | None = None
    ) -> None:
        """Add one frame.

        Args:
            points: [H, W, 3] or [N, 3] world points.
            colors: [H, W, 3] or [N, 3] uint8 RGB.
            conf: [H, W] or [N] confidence (higher is better).
            depth: optional [H, W] depth used to pick the initial voxel size.
        """
        pts = points.reshape(-1, 3)
        col = colors.reshape(-1, 3)
        cf = conf.reshape(-1).astype(np.float32)
        if not (len(pts) == len(col) == len(cf)):
            raise InputError(f"point map: {len(pts)} points, {len(col)} colours, {len(cf)} confidences")
        if self.voxel_size is None:
            ref = np.median(depth[depth > 0]) if depth is not None and (depth > 0).any() else None
            if ref is None:
                ref = float(np.median(np.linalg.norm(pts, axis=1)))
            self.voxel_size = max(float(ref) / 100.0, 1e-6)
        keep = np.isfinite(pts).all(axis=1)
        if self.conf_quantile > 0 and keep.any():
            keep &= cf >= np.quantile(cf[keep], self.conf_quantile)
        self._pending.append((pts[keep], col[keep], cf[keep]))
        if len(self._pending) >= self.merge_every:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        parts = self._pending
        if self._map is not None:
            parts = [
                (
                    self._map.point.positions.numpy(),
                    self._map.point.colors.numpy(),
                    self._map.point.confidence.numpy().reshape(-1),
                )
            ] + parts
        self._pending = []
        cloud = _tensor_cloud(*(np.concatenate(c) for c in zip(*parts, strict=True)))
        cloud = cloud.voxel_down_sample(self.voxel_size)
        while len(cloud.point.positions) > self.max_points:
            self.voxel_size *= self.growth
            cloud = cloud.voxel_down_sample(self.voxel_size)
        self._map = cloud

    def __len__(self) -> int:
        self._merge()
        return 0 if self._map is None else len(self._map.point.positions)

    def cloud(self) -> o3d.t.geometry.PointCloud:
        """The current map (pending frames merged first); empty cloud before any frame."""
        self._merge()
        if self._map is None:
            return _tensor_cloud(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
        return self._map

    def save(self, path: str | Path) -> int:
        """Atomically write the map as binary PLY (xyz float32, rgb uint8, confidence float32).

        Returns:
            the number of points written.
        """
        cloud = self.cloud()

        def _write(tmp: Path) -> None:
            if len(cloud.point.positions) == 0:  # open3d refuses to write an empty cloud
                tmp.write_bytes(EMPTY_PLY)
            elif not o3d.t.io.write_point_cloud(str(tmp), cloud, write_ascii=False):
                raise InputError(f"could not write point cloud to {path}")

        atomic_write(path, _write)
        return len(cloud.point.positions)
