"""StreamingPointMap: bounded size, confidence filtering, voxel merging, PLY read back by open3d."""

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial import cKDTree

from recon.errors import InputError
from recon.files import LineWriter, atomic_write
from recon.infer.pointmap import StreamingPointMap


def _frame(rng, n=64 * 48):
    pts = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    cols = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    conf = rng.uniform(1, 5, size=n).astype(np.float32)
    return pts, cols, conf


def test_map_stays_bounded_and_near_inputs(tmp_path):
    rng = np.random.default_rng(0)
    pmap = StreamingPointMap(voxel_size=0.01, max_points=2000, conf_quantile=0.0, merge_every=3)
    inputs = []
    for _ in range(20):
        pts, cols, conf = _frame(rng)
        inputs.append(pts)
        pmap.add(pts, cols, conf)
        assert len(pmap) <= 2000
    assert pmap.voxel_size > 0.01  # the voxel grew to keep the bound
    cloud = pmap.cloud().point.positions.numpy()
    # Every map point is a voxel average, so it lies within the voxel's diagonal of an input point.
    dist, _ = cKDTree(np.concatenate(inputs)).query(cloud)
    assert dist.max() <= pmap.voxel_size * np.sqrt(3) + 1e-6


def test_confidence_quantile_drops_low_confidence_points():
    rng = np.random.default_rng(1)
    pts, cols, conf = _frame(rng, 1000)
    pmap = StreamingPointMap(voxel_size=1e-6, max_points=10**6, conf_quantile=0.5, merge_every=1)
    pmap.add(pts, cols, conf)
    kept = pmap.cloud().point.confidence.numpy().reshape(-1)
    assert len(kept) == int((conf >= np.quantile(conf, 0.5)).sum())
    assert kept.min() >= np.quantile(conf, 0.5) - 1e-6


def test_save_writes_binary_ply_open3d_reads(tmp_path):
    rng = np.random.default_rng(2)
    pmap = StreamingPointMap(voxel_size=0.05, conf_quantile=0.0)
    pts, cols, conf = _frame(rng, 500)
    pmap.add(pts, cols, conf)
    n = pmap.save(tmp_path / "map.ply")
    header = (tmp_path / "map.ply").read_bytes()[:400]
    assert b"binary_little_endian" in header and b"property float confidence" in header
    back = o3d.t.io.read_point_cloud(str(tmp_path / "map.ply"))
    assert len(back.point.positions) == n > 0
    assert back.point.colors.dtype == o3d.core.uint8
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_bad_options_raise_clear_errors():
    with pytest.raises(InputError, match="voxel size"):
        StreamingPointMap(voxel_size=0)
    with pytest.raises(InputError, match="quantile"):
        StreamingPointMap(conf_quantile=1.5)


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_line_writer_flushes_each_line(tmp_path):
    w = LineWriter(tmp_path / "x.txt", header="a b")
    w.write("1 2")
    # readable before close: a killed run keeps every finished line
    assert (tmp_path / "x.txt").read_text() == "# a b\n1 2\n"
    w.close()
