"""Geometry core: known cases, round trips, batch shapes, gradcheck (float64), errors."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from recon.errors import ShapeError
from recon.geometry import (
    compose_poses,
    crop_intrinsics,
    focal_from_fov,
    fov_from_focal,
    invert_pose,
    pixel_rays,
    pose_from_Rt,
    quat_wxyz_to_rotmat,
    quat_xyzw_to_rotmat,
    relative_pose,
    resize_intrinsics,
    rotmat_to_quat_wxyz,
    rotmat_to_quat_xyzw,
    transform_points,
    unproject_depth,
)

DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float64, id="fp64")]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def random_poses(*lead, dtype=torch.float64):
    R = torch.as_tensor(Rotation.random(int(np.prod(lead)), random_state=0).as_matrix(), dtype=dtype)
    t = torch.randn(*lead, 3, dtype=dtype)
    return pose_from_Rt(R.reshape(*lead, 3, 3), t)


def intrinsics(fx=500.0, fy=480.0, cx=319.5, cy=239.5, dtype=torch.float64):
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


# ---------------------------------------------------------------- camera


@pytest.mark.parametrize("dtype", DTYPES)
def test_unproject_hand_computed(dtype):
    K = intrinsics(fx=2.0, fy=4.0, cx=1.0, cy=0.5, dtype=dtype)
    depth = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=dtype)
    pts = unproject_depth(depth, K)
    assert pts.shape == (2, 3, 3) and pts.dtype == dtype
    # pixel (u=2, v=1): x = (2 - 1) / 2 * 6 = 3, y = (1 - 0.5) / 4 * 6 = 0.75, z = 6
    torch.testing.assert_close(pts[1, 2], torch.tensor([3.0, 0.75, 6.0], dtype=dtype))
    # pixel (u=0, v=0): x = -1 / 2 * 1, y = -0.5 / 4 * 1
    torch.testing.assert_close(pts[0, 0], torch.tensor([-0.5, -0.125, 1.0], dtype=dtype))


def test_unproject_matches_naive_loop_batched():
    K = torch.stack([intrinsics(fx=300 + 10 * i, cx=7.3 + i) for i in range(6)]).reshape(2, 3, 3, 3)
    depth = torch.rand(2, 3, 5, 7, dtype=torch.float64) + 0.5
    pts = unproject_depth(depth, K)
    assert pts.shape == (2, 3, 5, 7, 3)
    ref = torch.empty_like(pts)
    for b in range(2):
        for t in range(3):
            k = K[b, t]
            for v in range(5):
                for u in range(7):
                    z = depth[b, t, v, u]
                    ref[b, t, v, u] = torch.stack(
                        ((u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z)
                    )
    torch.testing.assert_close(pts, ref)


def test_unproject_broadcasts_one_K_over_frames():
    K = intrinsics()
    depth = torch.rand(4, 6, 8, dtype=torch.float64)
    pts = unproject_depth(depth, K)
    assert pts.shape == (4, 6, 8, 3)
    torch.testing.assert_close(pts[2], unproject_depth(depth[2], K))


def test_pixel_rays_z_one_and_project_back():
    K = intrinsics(dtype=torch.float64)
    rays = pixel_rays(K, 4, 5)
    assert rays.shape == (4, 5, 3)
    torch.testing.assert_close(rays[..., 2], torch.ones(4, 5, dtype=torch.float64))
    uv = (rays @ K.T)[..., :2]  # project: K @ ray, z = 1
    v, u = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    torch.testing.assert_close(uv, torch.stack((u, v), dim=-1).double())


def test_resize_intrinsics_convention():
    K = intrinsics(fx=100.0, fy=80.0, cx=31.5, cy=23.5)  # centre of a 64x48 image
    K2 = resize_intrinsics(K, 0.5, 0.25)
    # centre stays the centre: (31.5 + 0.5) * 0.5 - 0.5 = 15.5 of a 32-wide image; 23.5 -> 5.5 of 12
    torch.testing.assert_close(K2, intrinsics(fx=50.0, fy=20.0, cx=15.5, cy=5.5))
    # the same ray: original continuous pixel u maps to u' = (u + 0.5) * s - 0.5 after resizing
    u = torch.tensor([0.0, 10.0, 63.0, 17.25], dtype=torch.float64)
    u_new = (u + 0.5) * 0.5 - 0.5
    torch.testing.assert_close((u_new - K2[0, 2]) / K2[0, 0], (u - K[0, 2]) / K[0, 0])
    # batched
    Kb = torch.stack([K, 2 * K])
    Kb[1, 2, 2] = 1.0
    assert resize_intrinsics(Kb, 2.0, 2.0).shape == (2, 3, 3)


def test_crop_intrinsics_moves_principal_point():
    K = intrinsics()
    Kc = crop_intrinsics(K, 10, 20)
    torch.testing.assert_close(Kc, intrinsics(cx=309.5, cy=219.5))
    # the same 3D point projects 10 px left, 20 px up in the crop
    p = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    uv, uv_c = (K @ p)[:2] / p[2], (Kc @ p)[:2] / p[2]
    torch.testing.assert_close(uv - uv_c, torch.tensor([10.0, 20.0], dtype=torch.float64))


def test_fov_focal_round_trip_and_known_value():
    torch.testing.assert_close(
        focal_from_fov(torch.tensor(math.pi / 2, dtype=torch.float64), 640.0), torch.tensor(320.0).double()
    )
    fov = torch.linspace(0.2, 2.5, 7, dtype=torch.float64)
    torch.testing.assert_close(fov_from_focal(focal_from_fov(fov, 480.0), 480.0), fov)


def test_gradcheck_unproject():
    K = intrinsics(fx=3.0, fy=2.5, cx=1.2, cy=0.7).requires_grad_()
    depth = (torch.rand(2, 3, 4, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(unproject_depth, (depth, K))


@pytest.mark.parametrize(
    "depth_shape, K, match",
    [
        pytest.param((4, 5), torch.eye(4), r"K: expected shape \[\*, 3, 3\], got \[4, 4\]", id="K-4x4"),
        pytest.param((5,), torch.eye(3), r"depth: expected shape \[\*, H, W\], got \[5\]", id="depth-1d"),
        pytest.param((4, 5), torch.zeros(3, 3), "singular intrinsics", id="K-zero-focal"),
        pytest.param((4, 5), torch.full((3, 3), float("nan")), "finite", id="K-nan"),
        pytest.param((2, 4, 5), torch.eye(3).expand(3, 3, 3), "must broadcast", id="batch-mismatch"),
    ],
)
def test_unproject_errors(depth_shape, K, match):
    with pytest.raises(ShapeError, match=match):
        unproject_depth(torch.ones(depth_shape), K)


# ---------------------------------------------------------------- poses


@pytest.mark.parametrize("dtype", DTYPES)
def test_transform_points_hand_computed(dtype):
    # 90 degrees about z, then translate by (1, 2, 3): (1, 0, 0) -> (0, 1, 0) + t
    T = torch.tensor([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=dtype)
    pts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    expected = torch.tensor([[1.0, 3.0, 3.0], [1.0, 2.0, 4.0]], dtype=dtype)
    torch.testing.assert_close(transform_points(T, pts), expected)


def test_transform_points_batched_matches_numpy():
    T = random_poses(2, 3)
    pts = torch.randn(2, 3, 10, 3, dtype=torch.float64)
    out = transform_points(T, pts)
    assert out.shape == (2, 3, 10, 3)
    Tn, pn = T.numpy(), pts.numpy()
    ref = np.einsum("btij,btnj->btni", Tn[..., :3, :3], pn) + Tn[..., None, :3, 3]
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_invert_compose_relative_round_trips(dtype):
    a, b = random_poses(4, dtype=dtype), random_poses(4, dtype=dtype).flip(0)
    eye = torch.eye(4, dtype=dtype).expand(4, 4, 4)
    torch.testing.assert_close(compose_poses(a, invert_pose(a)), eye, atol=TOL[dtype] * 10, rtol=0)
    torch.testing.assert_close(invert_pose(a), torch.linalg.inv(a), atol=TOL[dtype] * 10, rtol=0)
    rel = relative_pose(a, b)
    torch.testing.assert_close(compose_poses(a, rel), b, atol=TOL[dtype] * 10, rtol=0)


def test_relative_pose_maps_camera_b_points_into_camera_a():
    a, b = random_poses(2)
    p_b = torch.randn(5, 3, dtype=torch.float64)
    world = transform_points(b, p_b)
    p_a = transform_points(invert_pose(a), world)
    torch.testing.assert_close(transform_points(relative_pose(a, b), p_b), p_a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quaternion_known_values(dtype):
    # 90 degrees about +z: (w, x, y, z) = (cos 45, 0, 0, sin 45) maps x -> y
    c = math.sqrt(0.5)
    R = quat_wxyz_to_rotmat(torch.tensor([c, 0.0, 0.0, c], dtype=dtype))
    torch.testing.assert_close(R, torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=dtype))
    torch.testing.assert_close(quat_xyzw_to_rotmat(torch.tensor([0.0, 0.0, c, c], dtype=dtype)), R)
    torch.testing.assert_close(rotmat_to_quat_xyzw(R), torch.tensor([0.0, 0.0, c, c], dtype=dtype))


def test_quaternions_match_scipy_and_round_trip():
    rot = Rotation.random(50, random_state=1)
    R = torch.as_tensor(rot.as_matrix())
    q_xyzw = torch.as_tensor(rot.as_quat())  # scipy is scalar-last
    torch.testing.assert_close(quat_xyzw_to_rotmat(q_xyzw), R)
    torch.testing.assert_close(quat_wxyz_to_rotmat(q_xyzw[:, [3, 0, 1, 2]]), R)
    q_back = rotmat_to_quat_xyzw(R)
    assert (q_back[:, 3] >= 0).all()
    canonical = torch.where(q_xyzw[:, 3:] < 0, -q_xyzw, q_xyzw)
    torch.testing.assert_close(q_back, canonical)
    torch.testing.assert_close(rotmat_to_quat_wxyz(R), canonical[:, [3, 0, 1, 2]])
    # batch shapes are kept
    assert rotmat_to_quat_wxyz(R.reshape(5, 10, 3, 3)).shape == (5, 10, 4)


def test_quaternion_near_180_degrees_round_trip():
    # trace <= 0 branch of the conversion
    rot = Rotation.from_rotvec(np.array([[math.pi - 1e-3, 0, 0], [0, 0, math.pi], [1.7, -1.9, 0.4]]))
    R = torch.as_tensor(rot.as_matrix())
    torch.testing.assert_close(quat_wxyz_to_rotmat(rotmat_to_quat_wxyz(R)), R)


def test_gradcheck_poses_and_quaternions():
    T = random_poses(3).requires_grad_()
    pts = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(transform_points, (T, pts))
    assert torch.autograd.gradcheck(invert_pose, (T,))
    q = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quat_wxyz_to_rotmat, (q,))
    assert torch.autograd.gradcheck(quat_xyzw_to_rotmat, (q,))
    R = quat_wxyz_to_rotmat(q.detach()).requires_grad_()
    assert torch.autograd.gradcheck(rotmat_to_quat_wxyz, (R,))


def test_pose_errors():
    with pytest.raises(ShapeError, match=r"T: expected shape \[\*, 4, 4\], got \[3, 4\]"):
        invert_pose(torch.eye(4)[:3])
    bad = torch.eye(4)
    bad[0, 3] = float("inf")
    with pytest.raises(ShapeError, match="non-finite"):
        invert_pose(bad)
    singular = torch.eye(4)
    singular[2, 2] = 0.0
    with pytest.raises(ShapeError, match="singular or non-rigid"):
        invert_pose(singular)
    reflection = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(ShapeError, match="det"):
        invert_pose(reflection)
    last = torch.eye(4)
    last[3, 0] = 1.0
    with pytest.raises(ShapeError, match="last row"):
        invert_pose(last)
    with pytest.raises(ShapeError, match="zero-norm"):
        quat_wxyz_to_rotmat(torch.zeros(2, 4))
    with pytest.raises(ShapeError, match=r"quat_xyzw: expected shape \[\*, 4\], got \[3\]"):
        quat_xyzw_to_rotmat(torch.zeros(3))
    with pytest.raises(ShapeError, match=r"points: expected shape \[\*, N, 3\], got \[5, 2\]"):
        transform_points(torch.eye(4), torch.zeros(5, 2))
