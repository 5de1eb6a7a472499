"""Drift evaluation: hand-computed drift rates, prefix metrics vs the metric functions on truncated
arrays, the per-frame records of the scorer, an oracle model streamed end to end, bad input."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from data.synth import SynthConfig, synthetic_sequence
from recon.errors import ConfigError, InputError
from recon.eval.depth_metrics import depth_metrics
from recon.eval.drift import (
    drift_rate,
    evaluate_records,
    evaluate_trajectory,
    prefix_metrics,
    records_from_trajectories,
    resolve_lengths,
    stream_records,
)
from recon.eval.pose_metrics import pose_baselines, pose_metrics
from recon.eval.protocols import load_protocol, select_frames
from recon.eval.scoring import GroundTruthScorer
from recon.infer.frames import FramePrediction, SourceFrame
from recon.trajectory import read_tum

# A known world similarity between the model's world and the ground truth's: est = S^-1(gt).
SIM_SCALE, SIM_ROT = 0.5, Rotation.from_euler("xyz", [20.0, -35.0, 60.0], degrees=True).as_matrix()
SIM_T = np.array([0.3, -1.2, 2.0])


def _protocol(**overrides) -> object:
    base = {
        "name": "test",
        "dataset": {"format": "synthetic"},
        "synthetic": {"seeds": [0], "config": {"num_frames": 30}},
        "lengths": [10, 20, "full"],
        "pose": {"align": "sim3", "drift_align_frames": 10},
        "depth": {"align": ["median", "median_sequence", "scale_shift"], "samples_per_frame": 64},
    }
    base.update(overrides)
    return load_protocol(base)


def _gt_poses(n: int) -> np.ndarray:
    """A non-degenerate path: a helix with a turning camera (cam2world, metres)."""
    T = np.tile(np.eye(4), (n, 1, 1))
    i = np.arange(n)
    T[:, :3, 3] = np.stack([np.cos(i * 0.1), 0.05 * i, np.sin(i * 0.1)], axis=1)
    T[:, :3, :3] = Rotation.from_euler("y", (i * 3.0)[:, None], degrees=True).as_matrix()
    return T


def _to_model_world(gt: np.ndarray) -> np.ndarray:
    """The inverse similarity: poses as a model with world = some other frame and scale sees them."""
    out = gt.copy()
    out[:, :3, :3] = SIM_ROT.T @ gt[:, :3, :3]
    out[:, :3, 3] = ((gt[:, :3, 3] - SIM_T) @ SIM_ROT) / SIM_SCALE
    return out


def _drifting_estimate(gt: np.ndarray, n: int, d: float) -> np.ndarray:
    """Exact for frames < n, then the centre moves by d metres per frame along the gt world z axis."""
    drifted = gt.copy()
    drifted[:, 2, 3] += d * np.maximum(np.arange(len(gt)) - (n - 1), 0)
    return _to_model_world(drifted)


def test_drift_rate_of_a_line_is_its_slope_per_100_frames():
    e = 0.5 + 0.002 * np.arange(50)
    assert drift_rate(e) == pytest.approx(0.2, abs=1e-12)
    e[[3, 17]] = np.nan  # NaN frames are left out
    assert drift_rate(e, start=10) == pytest.approx(0.2, abs=1e-12)
    assert np.isnan(drift_rate([1.0, np.nan, np.nan], start=0))


def test_drift_rate_matches_scipy_linregress_on_noisy_errors():
    from scipy.stats import linregress

    rng = np.random.default_rng(0)
    e = 0.01 * np.arange(200) + rng.normal(0, 0.05, 200)
    reference = 100 * linregress(np.arange(20, 200), e[20:]).slope
    assert drift_rate(e, start=20) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize(
    "lengths, n, expected",
    [
        ([50, 100, "full"], 120, [(50, "50"), (100, "100"), (120, "full")]),
        ([50, 100, "full"], 100, [(50, "50"), (100, "100")]),
        ([50, 100, "full"], 40, [(40, "full")]),
        ([500, 10], 40, [(10, "10")]),
    ],
    ids=["full-beyond-lengths", "full-equals-a-length", "only-full-fits", "no-full"],
)
def test_resolve_lengths(lengths, n, expected):
    assert resolve_lengths(lengths, n) == expected


def test_known_linear_drift_gives_known_curve_and_rate():
    n, d, N = 10, 0.004, 80
    gt = _gt_poses(N)
    est = _drifting_estimate(gt, n, d)
    ts = np.arange(N) / 30.0
    result = evaluate_trajectory(ts, est, ts, gt, _protocol(lengths=[10, 40, "full"]))
    expected = d * np.maximum(np.arange(N) - (n - 1), 0)
    np.testing.assert_allclose(result.curves["ate"], expected, atol=1e-9)
    assert result.drift["ate_per_100_frames"] == pytest.approx(100 * d, abs=1e-9)
    assert [p["length"] for p in result.prefixes] == [10, 40, 80]
    assert result.prefixes[0]["pose"]["ate_rmse"] == pytest.approx(0.0, abs=1e-9)  # first 10 exact
    assert result.prefixes[0]["pose"]["scale"] == pytest.approx(SIM_SCALE, rel=1e-9)


def test_prefix_pose_metrics_equal_pose_metrics_on_truncated_arrays():
    gt = _gt_poses(60)
    rng = np.random.default_rng(1)
    est = _to_model_world(gt)
    est[:, :3, 3] += rng.normal(0, 0.02, (60, 3))
    rec = records_from_trajectories(np.arange(60.0), est, np.arange(60.0), gt)
    protocol = _protocol(pose={"align": "sim3", "rpe_delta": 2}, depth={"align": []})
    for L in (5, 33, 60):
        expected = pose_metrics(est[:L], gt[:L], "sim3", rpe_delta=2).to_dict()
        prefix = prefix_metrics(rec, L, protocol)
        got = prefix["pose"]
        assert got.keys() == {*expected, "ate_vs_static"}
        for k, v in expected.items():
            assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12) if isinstance(v, float) else got[k] == v
        # the baselines of the same prefix's ground truth, and the ratio
        assert prefix["pose_baselines"] == pytest.approx(pose_baselines(gt[:L], "sim3"), rel=1e-12)
        static = np.sqrt(((gt[:L, :3, 3] - gt[:L, :3, 3].mean(0)) ** 2).sum(1).mean())  # closed form
        assert prefix["pose_baselines"]["static_ate_rmse"] == pytest.approx(static, rel=1e-12)
        assert got["ate_vs_static"] == pytest.approx(expected["ate_rmse"] / static, rel=1e-12)
        assert 0 < got["ate_vs_static"] < 1
        assert got["scale"] == pytest.approx(SIM_SCALE, rel=0.1)  # the model world's scale, recovered


def test_prefix_baselines_use_the_posed_frames_and_the_protocol_alignment():
    # a camera moving 0.1 m per frame along x: constant velocity is exact, the static camera has
    # a closed form; with two frames lacking ground truth both are scored on the posed frames only
    N = 30
    line = np.tile(np.eye(4), (N, 1, 1))
    line[:, 0, 3] = 0.1 * np.arange(N)
    est = _to_model_world(line)
    est[:, :3, 3] += np.random.default_rng(0).normal(0, 0.01, (N, 3))
    ts = np.arange(N) / 30.0
    prefix = prefix_metrics(records_from_trajectories(ts, est, ts, line), N, _protocol(depth={"align": []}))
    assert prefix["pose_baselines"]["constant_velocity_ate_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert prefix["pose_baselines"]["static_ate_rmse"] == pytest.approx(0.1 * np.sqrt((N * N - 1) / 12))

    gt = line.copy()
    gt[[7, 20]] = np.nan
    rec = records_from_trajectories(ts, est, ts, gt)
    posed = rec.has_pose
    assert posed.sum() == N - 2
    for align in ("sim3", "none"):
        prefix = prefix_metrics(rec, N, _protocol(pose={"align": align}, depth={"align": []}))
        x = gt[posed, 0, 3]
        ref = x[0] if align == "none" else x.mean()
        assert prefix["pose_baselines"]["static_ate_rmse"] == pytest.approx(np.sqrt(((x - ref) ** 2).mean()))
        assert prefix["pose_baselines"] == pytest.approx(pose_baselines(gt[posed], align), rel=1e-12)
        # the posed frames jump 0.2 m where a frame is missing: no longer constant velocity
        assert prefix["pose_baselines"]["constant_velocity_ate_rmse"] > 0.01


def _depth_frames(T: int, H: int = 6, W: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 4.0, (T, H, W)).astype(np.float32)
    gt[:, 0, :3] = 0.0  # invalid pixels
    gt[2] = 0.0  # a frame without depth
    pred = (gt * rng.uniform(1.5, 2.5) * rng.uniform(0.8, 1.2, (T, H, W))).astype(np.float32)
    pred[gt == 0] = rng.uniform(0.5, 4.0)
    return pred, gt


def _score(pred, gt, samples: int, points: int = 0, K=None, poses=None) -> GroundTruthScorer:
    scorer = GroundTruthScorer(depth_samples=samples, point_samples=points)
    for i in range(len(gt)):
        pose = _gt_poses(len(gt))[i] if poses is None else poses[i]
        image = np.zeros((*gt.shape[1:], 3), np.uint8)
        frame = SourceFrame(i, i / 30.0, image, gt_depth=gt[i], gt_cam2world=pose, gt_K=K)
        wp = np.zeros((*gt.shape[1:], 3), np.float32)
        est = pose if np.isfinite(pose).all() else np.eye(4)
        scorer.update(FramePrediction(frame, pred[i], np.ones_like(pred[i]), np.eye(3), est, wp))
    return scorer


def test_prefix_depth_metrics_equal_depth_metrics_on_truncated_arrays():
    pred, gt = _depth_frames(12)
    rec = _score(pred, gt, samples=48).records()  # 48 >= 6 * 8 pixels: every valid pixel is kept
    protocol = _protocol()
    for L in (4, 12):
        got = prefix_metrics(rec, L, protocol)["depth"]
        ref = depth_metrics(pred[:L], gt[:L], "median")
        assert got["median"]["abs_rel"] == pytest.approx(ref.abs_rel, rel=1e-6)
        assert got["median"]["delta1"] == pytest.approx(ref.delta1, rel=1e-9)
        assert got["median"]["num_pixels"] == ref.num_pixels
        for mode in ("median_sequence", "scale_shift"):
            ref = depth_metrics(pred[:L], gt[:L], mode)
            for key in ("abs_rel", "rmse", "delta1", "scale", "shift", "num_pixels"):
                assert got[mode][key] == pytest.approx(getattr(ref, key), rel=1e-6), (mode, key)


def test_scorer_samples_are_valid_pixels_and_keeps_run_summary():
    pred, gt = _depth_frames(5, H=20, W=30)
    scorer = _score(pred, gt, samples=100)
    rec = scorer.records()
    assert rec.gt_samples.shape == (5, 100)
    for i in range(5):
        valid = gt[i][gt[i] > 1e-3]
        if valid.size == 0:
            assert not rec.gt_samples[i].any()
            continue
        kept = rec.gt_samples[i]
        assert (kept > 0).all() and np.isin(kept, valid).all()  # a sample of the valid pixels
        assert len(np.unique(kept)) == 100  # without replacement
    summary = scorer.result()  # the interface `recon run` uses
    pooled = depth_metrics(pred, gt, "median")
    assert summary["depth"]["abs_rel"] == pytest.approx(pooled.abs_rel, rel=1e-6)
    assert summary["pose"]["frames"] == 5 and summary["pose"]["ate_rmse"] == pytest.approx(0.0, abs=1e-9)


def test_ground_truth_points_land_on_the_unprojected_depth():
    K = np.array([[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]])
    pred, gt = _depth_frames(3)
    poses = _gt_poses(3)
    rec = _score(pred, gt, samples=48, points=5, K=K, poses=poses).records()
    i, j = 1, 0
    v, u = np.argwhere(gt[i] > 1e-3)[j]  # the first sampled pixel is the first valid one (sorted)
    z = gt[i, v, u]
    cam = np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
    np.testing.assert_allclose(rec.gt_points[i, j], poses[i, :3, :3] @ cam + poses[i, :3, 3], rtol=1e-5)
    assert rec.point_valid[i].all() and not rec.point_valid[2].any()  # frame 2 has no depth


class OracleModel:
    """Streams ground truth back: depth x 2, poses and points in a similar world, with z drift."""

    def __init__(self, seq, hw, n, d, nan_depth_at=()):
        self.cfg = type("Cfg", (), {"image_size": hw})()
        gt = np.stack([seq[i].cam2world for i in range(len(seq))])
        self.poses = _drifting_estimate(gt, n, d)
        self.seq = seq
        self.nan_depth_at = set(nan_depth_at)

    def init_state(self, batch_size, device="cpu"):
        return self._state(0)

    @staticmethod
    def _state(t: int):
        """What the stream loop reads of a StreamState: the fallback and correction counts, and a
        memory whose norm after t frames is 2t (a 2 x 2 cache filled with t)."""
        zero = torch.zeros(1, dtype=torch.long)
        poses = SimpleNamespace(fallbacks=zero, keyframes=SimpleNamespace(corrections=zero))
        return SimpleNamespace(t=t, poses=poses, memory=[{"cache": torch.full((2, 2), float(t))}])

    def step(self, x, state, K=None):
        t = state.t
        f = self.seq[t]
        depth = torch.from_numpy(f.depth.astype(np.float64))
        fx, fy, cx, cy = f.K[0, 0], f.K[1, 1], f.K[0, 2], f.K[1, 2]
        v, u = torch.meshgrid(torch.arange(depth.shape[0]), torch.arange(depth.shape[1]), indexing="ij")
        cam = torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1).numpy()
        world = cam @ f.cam2world[:3, :3].T + f.cam2world[:3, 3]
        model_world = ((world - SIM_T) @ SIM_ROT) / SIM_SCALE
        depth_out = 2.0 * f.depth + (f.depth <= 0)
        if t in self.nan_depth_at:
            depth_out[0, 0] = np.nan
        out = {
            "depth": torch.from_numpy(depth_out)[None].float(),
            "cam2world": torch.from_numpy(self.poses[t])[None].float(),
            "world_points": torch.from_numpy(model_world)[None].float(),
            "depth_conf": torch.ones(1, *f.depth.shape),
            "K": torch.from_numpy(f.K)[None].float(),
        }
        return out, self._state(t + 1)


def test_stream_health_counts_frames_with_non_finite_outputs():
    protocol = _protocol(lengths=["full"], depth={"samples_per_frame": 16})
    config = SynthConfig(num_frames=12, width=32, height=24, trajectory="walk", shadows=False)
    seq = synthetic_sequence(config, 4)
    model = OracleModel(seq, (24, 32), 4, 0.0, nan_depth_at=(3, 7))
    _, _, health = stream_records(model, seq, protocol)  # default: one sample every 100 frames
    assert health["nonfinite_frames"] == 2
    assert health["memory_norm_every"] == 100 and health["memory_norm"] == pytest.approx([24.0])  # last frame
    assert np.isnan(health["memory_norm_growth"])  # one sample: no growth to measure


def test_oracle_model_streamed_end_to_end(tmp_path):
    n, d, hw = 8, 0.01, (24, 32)
    protocol = _protocol(
        lengths=[8, 16, "full"],
        pose={"drift_align_frames": n},
        depth={"align": ["median", "median_sequence"], "samples_per_frame": 24 * 32},
        cloud={"enabled": True, "points_per_frame": 40, "threshold": 0.02},
    )
    config = SynthConfig(num_frames=24, width=32, height=24, trajectory="walk", shadows=False)
    seq = synthetic_sequence(config, 3)
    model = OracleModel(seq, hw, n, d)
    calls = []
    traj = tmp_path / "t.txt"
    rec, timing, health = stream_records(model, seq, protocol, trajectory_path=traj, progress=calls.append,
                                         norm_every=5)
    assert len(calls) == 24 and timing["fps"] > 0
    # memory norm 2t after frames 5, 10, 15, 20 and the last (24); growth = max(30, 40, 48) / max(10, 20)
    assert health["memory_norm"] == pytest.approx([10.0, 20.0, 30.0, 40.0, 48.0])
    assert health["memory_norm_growth"] == pytest.approx(2.4)
    assert health["nonfinite_frames"] == 0
    assert len(read_tum(traj)[0]) == 24  # the predicted trajectory, frame by frame
    result = evaluate_records(rec, protocol, "oracle")
    first, full = result.prefixes[0], result.prefixes[-1]
    assert first["label"] == "8" and full["label"] == "full"
    assert first["pose"]["ate_rmse"] == pytest.approx(0.0, abs=1e-5)  # float32 outputs
    assert first["pose"]["scale"] == pytest.approx(SIM_SCALE, rel=1e-5)
    for mode in ("median", "median_sequence"):  # depth is exactly 2x the ground truth
        assert full["depth"][mode]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
        assert full["depth"][mode]["scale"] == pytest.approx(0.5, rel=1e-6)
    assert first["cloud"]["accuracy_mean"] == pytest.approx(0.0, abs=1e-4)
    assert first["cloud"]["fscore"] == pytest.approx(1.0)
    expected = d * np.maximum(np.arange(24) - (n - 1), 0)
    np.testing.assert_allclose(result.curves["ate"], expected, atol=1e-5)
    assert result.drift["ate_per_100_frames"] == pytest.approx(100 * d, rel=1e-3)
    np.testing.assert_allclose(result.curves["abs_rel_fixed_scale"], 0.0, atol=1e-6)


def test_sequence_without_valid_depth_is_named():
    pred, gt = _depth_frames(6)
    gt[:] = 0.0
    rec = _score(pred, gt, samples=8).records()
    with pytest.raises(InputError, match=r"sequence office/seq-01: no valid ground-truth depth in any of"):
        evaluate_records(rec, _protocol(), "office/seq-01")


def test_sequence_without_poses_is_named():
    pred, gt = _depth_frames(6)
    rec = _score(pred, gt, samples=8, poses=np.full((6, 4, 4), np.nan)).records()
    with pytest.raises(InputError, match=r"sequence s: 0 of 6 frames have a ground-truth pose"):
        evaluate_records(rec, _protocol(), "s")


def test_trajectories_of_different_lengths_and_unassociable_timestamps():
    gt = _gt_poses(20)
    with pytest.raises(InputError, match="estimate: 19 timestamps but 20 poses"):
        evaluate_trajectory(np.arange(19.0), gt, np.arange(20.0), gt, _protocol())
    with pytest.raises(InputError, match="no timestamps within 0.02 s"):
        evaluate_trajectory(np.arange(20.0) + 1000.0, gt, np.arange(20.0), gt, _protocol())


def test_select_frames_start_stride_and_cap():
    seq = synthetic_sequence(SynthConfig(num_frames=40, width=16, height=12, shadows=False), 0)
    protocol = load_protocol({"name": "p", "synthetic": {"seeds": [0]}, "frames": {"start": 5, "stride": 3}})
    sel = protocol.frames
    view = select_frames(seq, sel, max_frames=4)
    assert len(view) == 4
    assert [view[i].timestamp for i in range(4)] == pytest.approx([(5 + 3 * i) / 30.0 for i in range(4)])
    with pytest.raises(InputError, match="leaves no frame"):
        select_frames(seq, type(sel)(start=40, stride=1))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"depth": {"aling": ["median"]}}, r"unknown key 'aling'"),
        ({"lengths": [50, "all"]}, r"lengths: expected integers >= 3 or 'full'"),
        ({"pose": {"align": "affine"}}, r"pose.align: expected one of"),
        ({"depth": {"align": ["mean"]}}, r"depth.align: expected modes"),
        ({"synthetic": {"seeds": [0], "config": {"num_frame": 3}}}, r"unknown key 'num_frame'"),
        ({"dataset": {"format": "tum"}, "sequences": [{"name": "a"}]}, r"missing 1 required .*'path'"),
        ({"lengths": 50}, r"lengths: expected a list"),
    ],
    ids=[
        "unknown-key", "bad-length", "bad-pose-align", "bad-depth-align", "bad-synth-key",
        "sequence-without-path", "lengths-not-a-list",
    ],
)
def test_protocol_errors_name_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        _protocol(**bad)


def test_records_grow_by_a_constant_size_per_frame():
    """The per-frame record is O(1): its size does not depend on the image size or the frame count."""
    sizes = {}
    for T, H, W in ((6, 20, 30), (12, 40, 60)):
        pred, gt = _depth_frames(T, H, W)
        rec = _score(pred, gt, samples=64, points=8, K=np.eye(3)).records()
        sizes[T] = sum(getattr(rec, k).nbytes for k in rec.__dataclass_fields__) / T
    assert sizes[6] == sizes[12]
