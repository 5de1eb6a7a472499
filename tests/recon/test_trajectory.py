"""TUM trajectory IO (cross-checked with evo), incremental writer, timestamp association."""

import numpy as np
import pytest
import torch
from evo.core.trajectory import PoseTrajectory3D
from evo.tools import file_interface
from scipy.spatial.transform import Rotation

from recon.errors import InputError, ShapeError
from recon.trajectory import TumWriter, associate_timestamps, read_tum, write_tum


def random_trajectory(n, seed=0):
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    T[:, :3, 3] = rng.normal(size=(n, 3)) * 3
    return 1305031102.175304 + np.arange(n) / 30.0, T


def test_write_read_round_trip(tmp_path):
    ts, T = random_trajectory(20)
    write_tum(tmp_path / "t.txt", ts, T)
    ts2, T2 = read_tum(tmp_path / "t.txt")
    assert ts2.dtype == np.float64 and T2.shape == (20, 4, 4) and T2.dtype == np.float64
    np.testing.assert_allclose(ts2, ts, atol=1e-9, rtol=0)
    np.testing.assert_allclose(T2, T, atol=1e-10, rtol=0)


def test_written_file_reads_in_evo(tmp_path):
    ts, T = random_trajectory(15, seed=1)
    write_tum(tmp_path / "t.txt", torch.as_tensor(ts), torch.as_tensor(T))
    traj = file_interface.read_tum_trajectory_file(str(tmp_path / "t.txt"))
    np.testing.assert_allclose(traj.timestamps, ts, atol=1e-9, rtol=0)
    np.testing.assert_allclose(np.stack(traj.poses_se3), T, atol=1e-10, rtol=0)


def test_reads_evo_written_file(tmp_path):
    ts, T = random_trajectory(12, seed=2)
    traj = PoseTrajectory3D(poses_se3=T, timestamps=ts)
    file_interface.write_tum_trajectory_file(str(tmp_path / "e.txt"), traj)
    ts2, T2 = read_tum(tmp_path / "e.txt")
    np.testing.assert_allclose(ts2, ts, atol=1e-6, rtol=0)
    np.testing.assert_allclose(T2, T, atol=1e-9, rtol=0)


def test_hand_written_line_quaternion_order(tmp_path):
    # qx qy qz qw = (0, 0, sin 45, cos 45): +90 degrees about z
    (tmp_path / "t.txt").write_text("# comment\n\n1.5 1 2 3 0 0 0.7071067811865476 0.7071067811865476\n")
    ts, T = read_tum(tmp_path / "t.txt")
    expected = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=np.float64)
    np.testing.assert_allclose(T[0], expected, atol=1e-12)
    assert ts.tolist() == [1.5]


def test_writer_flushes_each_line(tmp_path):
    ts, T = random_trajectory(5, seed=3)
    path = tmp_path / "w.txt"
    with TumWriter(path) as writer:
        for i in range(3):
            writer.write(ts[i], T[i])
            # readable by another reader at once: an interrupted run leaves a valid file
            ts_now, T_now = read_tum(path)
            assert len(ts_now) == i + 1
            np.testing.assert_allclose(T_now[-1], T[i], atol=1e-10)
        writer.write(ts[3], torch.as_tensor(T[3], dtype=torch.float32))
    assert writer.count == 4
    ts_all, T_all = read_tum(path)
    np.testing.assert_allclose(T_all[3], T[3], atol=1e-6)
    with pytest.raises(InputError, match="closed"):
        writer.write(ts[4], T[4])


@pytest.mark.parametrize(
    "text, match",
    [
        pytest.param("0 1 2 3 0 0 0 1\n1 1 2 3 0 0 1\n", r"t.txt:2: expected 8 values", id="seven-values"),
        pytest.param("# h\n0 1 2 x 0 0 0 1\n", r"t.txt:2: not a number", id="not-a-number"),
        pytest.param("0 1 2 nan 0 0 0 1\n", r"t.txt:1: non-finite", id="nan"),
        pytest.param("0 1 2 3 0 0 0 0\n", r"t.txt:1: zero quaternion", id="zero-quat"),
        pytest.param("# only a header\n", "no poses found", id="empty"),
    ],
)
def test_malformed_files(tmp_path, text, match):
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(InputError, match=match):
        read_tum(tmp_path / "t.txt")


def test_missing_file_and_bad_writes(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_tum(tmp_path / "nope.txt")
    ts, T = random_trajectory(3)
    with pytest.raises(ShapeError, match="timestamps: expected 3"):
        write_tum(tmp_path / "t.txt", ts[:2], T)
    with pytest.raises(ShapeError, match=r"cam2world: expected shape \[N, 4, 4\]"):
        write_tum(tmp_path / "t.txt", ts, T[:, :3])
    T[1, :3, :3] *= 2.0
    with pytest.raises(ShapeError, match="non-rigid"):
        write_tum(tmp_path / "t.txt", ts, T)
    with pytest.raises(InputError, match="parent folder"):
        TumWriter(tmp_path / "missing" / "t.txt")


def test_associate_like_tum_script():
    a = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    b = np.array([0.5, 0.29, 0.005, 0.31, 0.19, 0.115])
    ia, ib = associate_timestamps(a, b, max_diff=0.02)
    # 0.0-0.005, 0.1-0.115, 0.2-0.19, 0.3 has 0.29 and 0.31 at equal distance -> the lower index
    # (0.29); 0.4 has nothing within 0.02
    assert ia.tolist() == [0, 1, 2, 3]
    assert ib.tolist() == [2, 5, 4, 1]


def test_associate_greedy_one_to_one_matches_brute_force():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 10, 300))
    b = rng.uniform(0, 10, 1000)
    ia, ib = associate_timestamps(a, b, max_diff=0.01)
    # brute force, as TUM's associate.py: all pairs under max_diff, closest first, each used once
    cand = sorted((abs(x - y), i, j) for i, x in enumerate(a) for j, y in enumerate(b) if abs(x - y) < 0.01)
    used_a, used_b, ref = set(), set(), []
    for _, i, j in cand:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            ref.append((i, j))
    ref.sort()
    assert list(zip(ia.tolist(), ib.tolist(), strict=True)) == ref
    assert len(set(ib.tolist())) == len(ib)


def test_associate_errors():
    with pytest.raises(InputError, match="no timestamps within 0.02 s"):
        associate_timestamps([0.0, 1.0], [5.0, 6.0])
    with pytest.raises(InputError, match="finite"):
        associate_timestamps([np.nan], [0.0])
