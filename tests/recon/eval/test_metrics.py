"""Evaluation metrics against hand-computed cases, evo's own pipeline and open3d."""

import math

import numpy as np
import open3d as o3d
import pytest
from evo.core import metrics as evo_metrics
from evo.core.trajectory import PosePath3D
from scipy.spatial.transform import Rotation

from recon.errors import InputError, ShapeError
from recon.eval import (
    associate_trajectories,
    ate_vs_static,
    cloud_metrics,
    constant_velocity_ate,
    constant_velocity_trajectory,
    depth_metrics,
    per_frame_ate,
    pose_baselines,
    pose_metrics,
    static_camera_ate,
    static_camera_trajectory,
)


def make_trajectory(n, seed=0):
    """A smooth-ish random cam2world trajectory [n, 4, 4] (float64)."""
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.from_rotvec(np.cumsum(rng.normal(scale=0.05, size=(n, 3)), axis=0)).as_matrix()
    T[:, :3, 3] = np.cumsum(rng.normal(scale=0.1, size=(n, 3)), axis=0)
    return T


def sim3_poses(T, s, R, t):
    """Map cam2world poses by a world similarity (closed form, numpy)."""
    out = T.copy()
    out[:, :3, :3] = R @ T[:, :3, :3]
    out[:, :3, 3] = s * T[:, :3, 3] @ R.T + t
    return out


# ---------------------------------------------------------------- poses


def test_ate_zero_after_exact_similarity():
    gt = make_trajectory(40)
    R = Rotation.from_rotvec([0.3, -1.2, 0.5]).as_matrix()
    est = sim3_poses(gt, 0.37, R, np.array([1.0, -2.0, 0.5]))
    m = pose_metrics(est, gt, align="sim3")
    assert m.ate_rmse < 1e-10 and m.rpe_trans_rmse < 1e-10 and m.rpe_rot_rmse_deg < 1e-5
    assert m.scale == pytest.approx(1 / 0.37, rel=1e-10)
    assert m.num_poses == 40 and m.align_frames == 40
    # without scale correction the error cannot vanish
    assert pose_metrics(est, gt, align="se3").ate_rmse > 0.1


def test_ate_constant_offset_hand_computed():
    gt = make_trajectory(25, seed=1)
    est = gt.copy()
    est[:, :3, 3] += np.array([0.0, 0.3, 0.4])  # 0.5 m everywhere
    m = pose_metrics(est, gt, align="none")
    assert m.ate_rmse == pytest.approx(0.5, abs=1e-12)
    assert m.ate_max == pytest.approx(0.5, abs=1e-12)
    assert m.rpe_trans_rmse == pytest.approx(0.0, abs=1e-12)  # relative motion is unchanged
    assert pose_metrics(est, gt, align="se3").ate_rmse < 1e-12


def test_rpe_rotation_hand_computed():
    # static camera; the estimate turns 1 degree per frame about z more than the ground truth
    n = 10
    gt = np.tile(np.eye(4), (n, 1, 1))
    est = gt.copy()
    est[:, :3, :3] = Rotation.from_euler("z", np.arange(n)[:, None], degrees=True).as_matrix()
    m = pose_metrics(est, gt, align="none", rpe_delta=1)
    assert m.rpe_rot_rmse_deg == pytest.approx(1.0, abs=1e-9)
    assert pose_metrics(est, gt, align="none", rpe_delta=3).rpe_rot_rmse_deg == pytest.approx(3.0, abs=1e-9)
    assert m.rpe_trans_rmse == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("align, first_n", [("sim3", None), ("se3", None), ("sim3", 10)],
                         ids=["sim3-all", "se3-all", "sim3-first10"])
def test_matches_evo_pipeline(align, first_n):
    gt = make_trajectory(60, seed=2)
    rng = np.random.default_rng(3)
    est = sim3_poses(gt, 2.5, Rotation.from_rotvec([0.1, 0.2, -0.3]).as_matrix(), np.array([3.0, 1.0, 0.0]))
    est[:, :3, 3] += rng.normal(scale=0.05, size=(60, 3))
    est[:, :3, :3] = est[:, :3, :3] @ Rotation.from_rotvec(rng.normal(scale=0.01, size=(60, 3))).as_matrix()
    m = pose_metrics(est, gt, align=align, align_first_n=first_n, rpe_delta=2)

    # evo on its own: align with PosePath3D.align (Umeyama), then APE / RPE
    ref, traj = PosePath3D(poses_se3=list(gt)), PosePath3D(poses_se3=list(est))
    traj.align(ref, correct_scale=align == "sim3", n=-1 if first_n is None else first_n)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, traj))
    stats = ape.get_all_statistics()
    assert m.ate_rmse == pytest.approx(stats["rmse"], rel=1e-9)
    assert m.ate_mean == pytest.approx(stats["mean"], rel=1e-9)
    assert m.ate_median == pytest.approx(stats["median"], rel=1e-9)
    assert m.ate_max == pytest.approx(stats["max"], rel=1e-9)
    for relation, got in ((evo_metrics.PoseRelation.translation_part, m.rpe_trans_rmse),
                          (evo_metrics.PoseRelation.rotation_angle_deg, m.rpe_rot_rmse_deg)):
        rpe = evo_metrics.RPE(relation, delta=2, delta_unit=evo_metrics.Unit.frames)
        rpe.process_data((ref, traj))
        assert got == pytest.approx(rpe.get_statistic(evo_metrics.StatisticsType.rmse), rel=1e-9)
    np.testing.assert_allclose(per_frame_ate(est, gt, align, first_n), ape.error, rtol=1e-9, atol=1e-12)


def test_drift_curve_with_alignment_on_first_frames():
    # gt moves along x; the estimate is exact for 10 frames, then drifts 0.01 m per frame along y
    n = 30
    gt = np.tile(np.eye(4), (n, 1, 1))
    gt[:, 0, 3] = np.arange(n) * 0.1
    gt[:, 2, 3] = np.sin(np.arange(n))  # not collinear, so the alignment is unique
    est = gt.copy()
    drift = np.clip(np.arange(n) - 9, 0, None) * 0.01
    est[:, 1, 3] += drift
    curve = per_frame_ate(est, gt, align="sim3", align_first_n=10)
    np.testing.assert_allclose(curve, drift, atol=1e-9)
    # aligning on all frames spreads the drift and hides its growth
    assert per_frame_ate(est, gt, align="sim3")[-1] < drift[-1] - 0.02


def test_associate_trajectories():
    gt = make_trajectory(100, seed=4)
    ts_gt = np.arange(100) * 0.01
    ts_est = np.array([0.001, 0.302, 0.5, 0.994, 5.0])
    ts, est, ref = associate_trajectories(ts_est, gt[[0, 30, 50, 99, 0]], ts_gt, gt)
    np.testing.assert_array_equal(ts, ts_est[:4])
    np.testing.assert_array_equal(ref, gt[[0, 30, 50, 99]])
    np.testing.assert_array_equal(est, ref)


def test_pose_errors():
    gt = make_trajectory(10)
    with pytest.raises(InputError, match="different lengths: estimate has 9 poses, ground truth 10"):
        pose_metrics(gt[:9], gt)
    with pytest.raises(InputError, match="align: expected one of"):
        pose_metrics(gt, gt, align="sim2")
    with pytest.raises(InputError, match=r"align_first_n: expected 3 <= n <= 10"):
        pose_metrics(gt, gt, align_first_n=2)
    static = np.tile(np.eye(4), (10, 1, 1))
    with pytest.raises(InputError, match="must not all coincide"):
        pose_metrics(static, gt)
    bad = gt.copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(InputError, match="estimated poses: expected finite poses"):
        pose_metrics(bad, gt)
    with pytest.raises(InputError, match="rpe_delta"):
        pose_metrics(gt, gt, rpe_delta=10)
    with pytest.raises(InputError, match="no timestamps within"):
        associate_trajectories([0.0], gt[:1], [9.0], gt[:1])


# ---------------------------------------------------------------- pose baselines


def _line(n, v, R0, c0):
    """A camera with a fixed orientation R0 moving by v per frame from c0 (constant velocity)."""
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = R0
    T[:, :3, 3] = c0 + np.arange(n)[:, None] * v
    return T


def test_baselines_on_a_straight_line_closed_form():
    n, v = 25, np.array([0.03, -0.04, 0.12])  # |v| = 0.13 m per frame
    gt = _line(n, v, Rotation.from_rotvec([0.2, -0.5, 1.0]).as_matrix(), np.array([1.0, 2.0, -3.0]))
    speed = 0.13
    # static camera: frame k is k|v| from the first centre; about the centroid the RMS of 0..n-1 is
    # sqrt((n^2 - 1) / 12)
    assert static_camera_ate(gt, "sim3") == pytest.approx(speed * math.sqrt((n * n - 1) / 12), rel=1e-12)
    assert static_camera_ate(gt, "se3") == pytest.approx(speed * math.sqrt((n * n - 1) / 12), rel=1e-12)
    # no alignment: it stays at frame 0; mean of k^2 over 0..n-1 is (n - 1)(2n - 1) / 6
    from_first = speed * math.sqrt((n - 1) * (2 * n - 1) / 6)
    assert static_camera_ate(gt, "none") == pytest.approx(from_first, rel=1e-12)
    # fitted on the first m frames: placed at frame (m - 1) / 2; RMS^2 = var + (mean offset)^2
    m = 5
    expected = speed * math.sqrt((n * n - 1) / 12 + ((n - 1) / 2 - (m - 1) / 2) ** 2)
    assert static_camera_ate(gt, "sim3", align_first_n=m) == pytest.approx(expected, rel=1e-12)
    # constant velocity on constant-velocity ground truth is exact, whatever the alignment
    for align in ("sim3", "se3", "none"):
        assert constant_velocity_ate(gt, align) == pytest.approx(0.0, abs=1e-9), align
    np.testing.assert_allclose(static_camera_trajectory(gt), np.repeat(gt[:1], n, axis=0))
    assert pose_baselines(gt, "none") == pytest.approx(
        {"static_ate_rmse": static_camera_ate(gt, "none"), "constant_velocity_ate_rmse": 0.0}, abs=1e-9)


def test_constant_velocity_reproduces_a_screw_motion():
    """Ground truth P_k = P_0 D^k (D: a turn and a step, so a helix): the baseline equals it."""
    n = 200
    D = np.eye(4)
    D[:3, :3] = Rotation.from_rotvec([0.01, 0.05, -0.02]).as_matrix()
    D[:3, 3] = [0.02, 0.0, 0.05]
    P0 = make_trajectory(1, seed=7)[0]
    gt = np.stack([P0 @ np.linalg.matrix_power(D, k) for k in range(n)])
    np.testing.assert_allclose(constant_velocity_trajectory(gt), gt, atol=1e-9)
    assert constant_velocity_ate(gt, "sim3") == pytest.approx(0.0, abs=1e-9)
    assert static_camera_ate(gt, "sim3") > 0.1


@pytest.mark.parametrize("align, first_n", [("sim3", None), ("se3", None), ("none", None), ("sim3", 10)])
def test_constant_velocity_matches_evo_on_a_random_trajectory(align, first_n):
    gt = make_trajectory(60, seed=5)
    D = np.linalg.inv(gt[0]) @ gt[1]
    cv = np.stack([gt[0] @ np.linalg.matrix_power(D, k) for k in range(60)])  # independent construction
    np.testing.assert_allclose(constant_velocity_trajectory(gt), cv, atol=1e-9)
    ref, traj = PosePath3D(poses_se3=list(gt)), PosePath3D(poses_se3=list(cv))
    if align != "none":
        traj.align(ref, correct_scale=align == "sim3", n=-1 if first_n is None else first_n)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, traj))
    expected = ape.get_statistic(evo_metrics.StatisticsType.rmse)
    assert constant_velocity_ate(gt, align, first_n) == pytest.approx(expected, rel=1e-9)
    assert expected > 0.1  # a random walk does not keep its first step


def test_static_camera_is_the_best_placed_point_and_bounds_sim3_ate():
    from scipy.optimize import minimize

    gt = make_trajectory(40, seed=6)
    centres = gt[:, :3, 3]

    def rms(t):
        return math.sqrt(((centres - t) ** 2).sum(axis=1).mean())

    best = minimize(rms, centres[0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    assert static_camera_ate(gt, "sim3") == pytest.approx(best.fun, rel=1e-6)
    assert static_camera_ate(gt, "sim3") < rms(centres[0]) == pytest.approx(static_camera_ate(gt, "none"))
    # the static camera is the scale -> 0 limit of a Sim(3) fit on all frames: no estimate does worse
    for seed in range(5):
        est = make_trajectory(40, seed=100 + seed)
        ate = pose_metrics(est, gt, "sim3").ate_rmse
        assert ate <= static_camera_ate(gt, "sim3") + 1e-12
        assert 0.0 < ate_vs_static(ate, static_camera_ate(gt, "sim3")) <= 1.0 + 1e-12


def test_baselines_of_a_camera_that_does_not_translate():
    # it only turns: both baselines' centres coincide, every ATE is 0 and the ratio is undefined
    gt = np.tile(np.eye(4), (10, 1, 1))
    gt[:, :3, :3] = Rotation.from_euler("z", np.arange(10)[:, None] * 5.0, degrees=True).as_matrix()
    assert pose_baselines(gt, "sim3") == {"static_ate_rmse": 0.0, "constant_velocity_ate_rmse": 0.0}
    assert ate_vs_static(0.3, 0.0) is None and ate_vs_static(0.3, 0.6) == pytest.approx(0.5)
    # no translation in the first step, motion later: constant velocity stands still like the static camera
    gt[5:, 0, 3] = 1.0
    assert constant_velocity_ate(gt, "sim3") == pytest.approx(static_camera_ate(gt, "sim3"), rel=1e-12)
    assert static_camera_ate(gt, "sim3") == pytest.approx(0.5, rel=1e-12)  # half at 0, half at 1
    with pytest.raises(InputError, match="expected >= 2 ground-truth poses"):
        constant_velocity_trajectory(gt[:1])
    with pytest.raises(InputError, match="align: expected one of"):
        static_camera_ate(gt, "sim2")


# ---------------------------------------------------------------- depth


def test_depth_hand_computed_metric():
    gt = np.array([[1.0, 2.0, 4.0, 0.0]])  # last pixel invalid
    pred = np.array([[1.0, 2.0, 2.0, 7.0]])
    m = depth_metrics(pred, gt, align="none")
    assert m.num_pixels == 3
    assert m.abs_rel == pytest.approx((0 + 0 + 0.5) / 3)
    assert m.sq_rel == pytest.approx((4 / 4) / 3)
    assert m.rmse == pytest.approx(math.sqrt(4 / 3))
    assert m.rmse_log == pytest.approx(math.sqrt(math.log(2) ** 2 / 3))
    # ratios 1, 1, 2: 2 > 1.25, 1.5625, 1.953125
    assert (m.delta1, m.delta2, m.delta3) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


def test_depth_alignment_modes():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 5.0, size=(3, 8, 10))
    gt[:, 0, :3] = 0.0
    per_frame_scaled = gt * np.array([2.0, 3.0, 0.5])[:, None, None]
    m = depth_metrics(per_frame_scaled, gt, align="median")
    assert m.abs_rel < 1e-12 and m.delta1 == 1.0
    assert m.scale == pytest.approx(np.mean([1 / 2, 1 / 3, 2.0]))
    # one scale cannot fix three: compare with a naive numpy computation of the standard formula
    m_seq = depth_metrics(per_frame_scaled, gt, align="median_sequence")
    valid = gt > 1e-3
    s = np.median(gt[valid]) / np.median(per_frame_scaled[valid])
    d, g = np.clip(per_frame_scaled[valid] * s, 1e-3, None), gt[valid]
    assert m_seq.abs_rel == pytest.approx(np.mean(np.abs(d - g) / g), rel=1e-12)
    assert m_seq.delta1 == pytest.approx(np.mean(np.maximum(d / g, g / d) < 1.25), rel=1e-12)
    assert m_seq.rmse == pytest.approx(np.sqrt(np.mean((d - g) ** 2)), rel=1e-12)
    # affine-invariant prediction: s * pred + b recovered by least squares
    affine = (gt - 1.0) / 2.0 + 3.0
    m_ss = depth_metrics(affine, gt, align="scale_shift")
    slope, intercept = np.polyfit(affine[valid], gt[valid], 1)
    assert (m_ss.scale, m_ss.shift) == pytest.approx((slope, intercept), rel=1e-9)
    assert m_ss.abs_rel < 1e-9
    # per-frame abs rel curve
    assert len(m_seq.abs_rel_per_frame) == 3
    frame1 = valid[1]
    d1 = np.clip(per_frame_scaled[1][frame1] * s, 1e-3, None)
    assert m_seq.abs_rel_per_frame[1] == pytest.approx(np.mean(np.abs(d1 - gt[1][frame1]) / gt[1][frame1]))


def test_depth_scale_shift_on_noisy_depth_matches_numpy_and_ignores_memory_layout():
    """A noisy affine prediction: (s, b) equal numpy's polyfit; copies at other addresses agree to the bit."""
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 8.0, (4, 23, 31))
    gt[0, :3] = 0.0  # invalid pixels
    pred = 0.4 * gt + 1.5 + rng.normal(0.0, 0.2, gt.shape)
    valid = gt > 1e-3
    m = depth_metrics(pred, gt, align="scale_shift")
    slope, intercept = np.polyfit(pred[valid], gt[valid], 1)
    assert (m.scale, m.shift) == pytest.approx((slope, intercept), rel=1e-10)
    d = np.clip(pred[valid] * slope + intercept, 1e-3, None)
    assert m.abs_rel == pytest.approx(np.mean(np.abs(d - gt[valid]) / gt[valid]), rel=1e-10)
    # the same values in a buffer offset by one element (other alignment): the same bits
    for offset in (1, 3):
        buf_p, buf_g = np.empty(pred.size + offset), np.empty(gt.size + offset)
        buf_p[offset:], buf_g[offset:] = pred.ravel(), gt.ravel()
        moved = depth_metrics(buf_p[offset:].reshape(pred.shape), buf_g[offset:].reshape(gt.shape),
                              align="scale_shift")
        assert (moved.scale, moved.shift, moved.abs_rel) == (m.scale, m.shift, m.abs_rel)
    # a constant prediction: no slope to fit, the best constant is the mean depth
    flat = depth_metrics(np.full(gt.shape, 2.0), gt, align="scale_shift")
    assert flat.scale == 0.0 and flat.shift == pytest.approx(gt[valid].mean(), rel=1e-12)


def test_depth_cap_and_mask():
    gt = np.array([[[1.0, 2.0, 50.0, 90.0]]])
    pred = np.array([[[1.0, 2.0, 200.0, 1.0]]])
    m = depth_metrics(pred, gt, align="none", max_depth=80.0)
    # 90 m is beyond the cap (invalid); the 200 m prediction is clipped to 80: |80 - 50| / 50
    assert m.num_pixels == 3
    assert m.abs_rel == pytest.approx((0 + 0 + 30 / 50) / 3)
    mask = np.array([[[True, True, False, True]]])
    assert depth_metrics(pred, gt, align="none", max_depth=80.0, mask=mask).abs_rel == 0.0


def test_depth_errors():
    with pytest.raises(InputError, match="no valid depth pixels"):
        depth_metrics(np.ones((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ShapeError, match=r"pred: expected the shape of gt \[2, 4, 4\], got \[2, 4, 5\]"):
        depth_metrics(np.ones((2, 4, 5)), np.ones((2, 4, 4)))
    with pytest.raises(InputError, match="align: expected one of"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 4)), align="mean")
    with pytest.raises(InputError, match="min_depth < max_depth"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 4)), max_depth=0.0)


# ---------------------------------------------------------------- point clouds


def plane_grid(n=40, spacing=0.01):
    u, v = np.meshgrid(np.arange(n) * spacing, np.arange(n) * spacing, indexing="ij")
    return np.stack((u.ravel(), v.ravel(), np.zeros(n * n)), axis=1)


def test_cloud_distances_match_open3d():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(500, 3))
    gt = rng.normal(size=(700, 3)) + 0.1
    m = cloud_metrics(pred, gt, threshold=0.1)
    cp = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pred))
    cg = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(gt))
    acc = np.asarray(cp.compute_point_cloud_distance(cg))
    comp = np.asarray(cg.compute_point_cloud_distance(cp))
    assert m.accuracy_mean == pytest.approx(acc.mean(), rel=1e-9)
    assert m.accuracy_median == pytest.approx(np.median(acc), rel=1e-9)
    assert m.completeness_mean == pytest.approx(comp.mean(), rel=1e-9)
    assert m.completeness_median == pytest.approx(np.median(comp), rel=1e-9)
    assert m.chamfer_l1 == pytest.approx(0.5 * (acc.mean() + comp.mean()), rel=1e-9)
    assert m.precision == pytest.approx(np.mean(acc < 0.1))
    assert m.recall == pytest.approx(np.mean(comp < 0.1))


def test_cloud_shifted_plane_hand_computed():
    gt = plane_grid()
    pred = gt + np.array([0.0, 0.0, 0.03])
    m = cloud_metrics(pred, gt, threshold=0.05)
    assert (m.accuracy_mean, m.completeness_mean, m.chamfer_l1) == pytest.approx((0.03, 0.03, 0.03))
    assert m.normal_consistency == pytest.approx(1.0, abs=1e-9)  # open3d normals of two parallel planes
    assert (m.precision, m.recall, m.fscore) == (1.0, 1.0, 1.0)
    assert cloud_metrics(pred, gt, threshold=0.02).fscore == 0.0


def test_cloud_fscore_with_outliers_and_given_normals():
    gt = plane_grid(20)
    outliers = np.array([[5.0, 5.0, 5.0]] * 100)
    pred = np.concatenate((gt, outliers))
    n_gt = np.tile([0.0, 0.0, 1.0], (len(gt), 1))
    tilt = np.tile([0.0, math.sin(math.pi / 3), math.cos(math.pi / 3)], (len(pred), 1))  # 60 degrees
    m = cloud_metrics(pred, gt, threshold=0.01, pred_normals=tilt, gt_normals=n_gt)
    precision = 400 / 500
    assert m.precision == pytest.approx(precision) and m.recall == 1.0
    assert m.fscore == pytest.approx(2 * precision / (precision + 1))
    assert m.normal_consistency == pytest.approx(0.5)  # cos 60 both ways


def test_cloud_icp_refines_a_small_misalignment():
    u, v = np.meshgrid(np.linspace(-1, 1, 81), np.linspace(-1, 1, 81), indexing="ij")  # 0.025 spacing
    gt = np.stack((u.ravel(), v.ravel(), 0.3 * np.sin(3 * u.ravel()) * np.cos(2 * v.ravel())), axis=1)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.0, 0.005, 0.01]).as_matrix()
    T[:3, 3] = [0.004, -0.006, 0.003]
    pred = gt @ T[:3, :3].T + T[:3, 3]
    before = cloud_metrics(pred, gt, threshold=0.005)
    after = cloud_metrics(pred, gt, threshold=0.005, icp_max_distance=0.1)
    assert before.chamfer_l1 > 0.005
    assert after.chamfer_l1 < 1e-4 and after.fscore == 1.0 and after.icp_fitness == 1.0
    np.testing.assert_allclose(np.array(after.icp_transform), np.linalg.inv(T), atol=1e-4)
    assert before.icp_transform == np.eye(4).tolist() and math.isnan(before.icp_fitness)


def test_cloud_errors():
    with pytest.raises(InputError, match="pred: empty point cloud"):
        cloud_metrics(np.zeros((0, 3)), np.ones((4, 3)))
    with pytest.raises(ShapeError, match=r"gt: expected points \[N, 3\], got \[4, 2\]"):
        cloud_metrics(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(InputError, match="non-finite"):
        cloud_metrics(np.full((4, 3), np.nan), np.ones((4, 3)))
    with pytest.raises(ShapeError, match="one per point"):
        cloud_metrics(plane_grid(5), plane_grid(5), pred_normals=np.ones((3, 3)))
