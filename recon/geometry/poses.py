"""Rigid poses and rotations: transforms, inverse, composition, quaternions (order in the name).

Poses are 4x4 homogeneous ``cam2world`` (camera-to-world, OpenCV camera) unless a name says
otherwise. All functions are torch, batched over any leading dimensions, float32 / float64, and
differentiable. Quaternion conversions use kornia, whose quaternions are (w, x, y, z).
"""

from __future__ import annotations

import torch
from kornia.geometry.conversions import (
    axis_angle_to_rotation_matrix,
    quaternion_to_rotation_matrix,
    rotation_matrix_to_axis_angle,
    rotation_matrix_to_quaternion,
)

from recon.errors import ShapeError, check_shape

# Largest |R^T R - I| entry accepted as a rotation, per dtype (float32 poses accumulate rounding).
_ORTHO_TOL = {torch.float64: 1e-4, torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def check_pose(T: torch.Tensor, name: str = "pose") -> None:
    """Raise :class:`ShapeError` unless ``T`` is a finite rigid transform [..., 4, 4].

    Rigid: last row ``0 0 0 1`` and an orthonormal rotation block with det +1 (within a dtype
    tolerance). A singular or scaled matrix is rejected, so closed-form inversion is valid.

    Args:
        T: poses [..., 4, 4].
        name: the argument's name for the message.
    """
    check_shape(T, "* 4 4", name)
    if not torch.isfinite(T).all():
        bad = int((~torch.isfinite(T)).sum())
        raise ShapeError(f"{name}: expected finite poses, got {bad} non-finite entries")
    if T.numel() == 0:
        return
    tol = _ORTHO_TOL.get(T.dtype, 1e-3)
    with torch.no_grad():
        R = T[..., :3, :3].double()
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        ortho_err = (R.transpose(-1, -2) @ R - eye).abs().amax().item()
        det_min = torch.linalg.det(R).amin().item()
        last = T[..., 3, :].double() - R.new_tensor([0.0, 0.0, 0.0, 1.0])
        last_err = last.abs().amax().item()
    if ortho_err > tol or abs(det_min - 1.0) > 3 * tol:
        raise ShapeError(
            f"{name}: expected a rotation block with R^T R = I and det +1, got max |R^T R - I| = "
            f"{ortho_err:.3g}, min det = {det_min:.4g} (singular or non-rigid matrix)"
        )
    if last_err > tol:
        raise ShapeError(f"{name}: expected last row 0 0 0 1, got max deviation {last_err:.3g}")


def pose_from_Rt(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Assemble 4x4 poses from rotations [..., 3, 3] and translations [..., 3].

    Returns:
        T [..., 4, 4] = [[R, t], [0, 1]].
    """
    check_shape(R, "* 3 3", "R")
    check_shape(t, "* 3", "t")
    lead = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    top = torch.cat((R.expand(*lead, 3, 3), t.expand(*lead, 3)[..., None]), dim=-1)
    bottom = torch.zeros(*lead, 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((top, bottom), dim=-2)


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 transforms to point sets: ``p' = R p + t`` (also valid for Sim(3) matrices s*R).

    Args:
        T: transforms [..., 4, 4] (e.g. cam2world maps camera-frame points to world points); leading
            dims broadcast against the points'.
        points: points [..., N, 3].

    Returns:
        points [..., N, 3] in the target frame.
    """
    check_shape(T, "* 4 4", "T")
    check_shape(points, "* N 3", "points")
    R = T[..., None, :3, :3]  # [..., 1, 3, 3], broadcasts over N
    t = T[..., None, :3, 3]  # [..., 1, 3]
    return (R @ points[..., None]).squeeze(-1) + t


def invert_pose(T: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Closed-form inverse of rigid transforms: ``[[R^T, -R^T t], [0, 1]]``.

    Args:
        T: rigid poses [..., 4, 4] (checked: finite, orthonormal rotation, last row 0 0 0 1).
        check: run :func:`check_pose` (a host sync; off in per-frame loops whose poses are rigid
            by construction).

    Returns:
        T^-1 [..., 4, 4] (cam2world -> world2cam and back).
    """
    if check:
        check_pose(T, "T")
    R_inv = T[..., :3, :3].transpose(-1, -2)
    t_inv = -(R_inv @ T[..., :3, 3:4]).squeeze(-1)
    return pose_from_Rt(R_inv, t_inv)


def compose_poses(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Composition ``a @ b`` of 4x4 transforms (apply b first, then a); leading dims broadcast."""
    check_shape(a, "* 4 4", "a")
    check_shape(b, "* 4 4", "b")
    return a @ b


def rotation_geodesic(R_pred: torch.Tensor, R_gt: torch.Tensor) -> torch.Tensor:
    """Angle (radians) of ``R_pred^T R_gt``, computed as ``atan2(|axis|, trace - 1)`` (stable near 0 and pi).

    Args:
        R_pred, R_gt: [..., 3, 3] rotations.

    Returns:
        [...] angles in [0, pi].
    """
    M = R_pred.transpose(-1, -2) @ R_gt
    trace = M.diagonal(dim1=-2, dim2=-1).sum(-1)
    skew = torch.stack((M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0],
                        M[..., 1, 0] - M[..., 0, 1]), dim=-1)
    # |skew| = 2 sin(theta), trace - 1 = 2 cos(theta); the epsilon keeps the norm's gradient finite at 0.
    sin2 = torch.sqrt((skew * skew).sum(-1) + 1e-20)
    return torch.atan2(sin2, trace - 1.0)


def interpolate_poses(a: torch.Tensor, b: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """Move rigid poses a toward b [..., 4, 4] by ``weight`` in [0, 1] (0: a, 1: b).

    The rotation moves along the geodesic, ``Ra exp(weight log(Ra^T Rb))``; the translation
    linearly. ``weight`` is a float or a tensor broadcasting against the leading dims.
    """
    delta = rotation_matrix_to_axis_angle((a[..., :3, :3].transpose(-1, -2) @ b[..., :3, :3]).contiguous())
    w = torch.as_tensor(weight, dtype=a.dtype, device=a.device)
    scaled = delta * w[..., None]
    R = a[..., :3, :3] @ axis_angle_to_rotation_matrix(scaled.reshape(-1, 3)).view(*scaled.shape[:-1], 3, 3)
    t = a[..., :3, 3] + w[..., None] * (b[..., :3, 3] - a[..., :3, 3])
    return pose_from_Rt(R, t)


def relative_pose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pose of b in a's frame: ``inv(a) @ b`` (for cam2world a, b: camera b -> camera a).

    Args:
        a: rigid poses [..., 4, 4].
        b: poses [..., 4, 4]; leading dims broadcast against a's.

    Returns:
        [..., 4, 4].
    """
    check_shape(b, "* 4 4", "b")
    return invert_pose(a) @ b


def _check_quat(q: torch.Tensor, name: str) -> None:
    check_shape(q, "* 4", name)
    if not torch.isfinite(q).all():
        raise ShapeError(f"{name}: expected finite quaternions, got non-finite values")
    if q.numel() and (q.norm(dim=-1) < 1e-8).any():
        raise ShapeError(f"{name}: expected non-zero quaternions, got a zero-norm quaternion")


def quat_wxyz_to_rotmat(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] in (w, x, y, z) order (normalised first)."""
    _check_quat(quat_wxyz, "quat_wxyz")
    return quaternion_to_rotation_matrix(quat_wxyz)  # kornia: (w, x, y, z)


def rotmat_to_quat_wxyz(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [..., 4] in (w, x, y, z) order with w >= 0, from rotations [..., 3, 3]."""
    check_shape(R, "* 3 3", "R")
    if not torch.isfinite(R).all():
        raise ShapeError("R: expected finite rotation matrices, got non-finite values")
    q = rotation_matrix_to_quaternion(R)  # kornia: (w, x, y, z), sign not canonical
    q = q / q.norm(dim=-1, keepdim=True)
    # q and -q are the same rotation: pick w >= 0 so equal rotations give equal quaternions.
    return torch.where(q[..., :1] < 0, -q, q)


def quat_xyzw_to_rotmat(quat_xyzw: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] in (x, y, z, w) order (TUM, scipy)."""
    _check_quat(quat_xyzw, "quat_xyzw")
    return quaternion_to_rotation_matrix(quat_xyzw[..., [3, 0, 1, 2]])  # reorder xyzw -> wxyz


def rotmat_to_quat_xyzw(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [..., 4] in (x, y, z, w) order (TUM, scipy) with w >= 0."""
    return rotmat_to_quat_wxyz(R)[..., [1, 2, 3, 0]]  # reorder wxyz -> xyzw
