"""Pose helpers for the readers: numpy in/out around :mod:`recon.geometry` (the one implementation
of quaternions, rigid checks and inverses), with errors re-raised as InputError naming the file.

Conventions: 4x4 float64 ``cam2world`` with an OpenCV camera (x right, y down, z forward).
Quaternion order is named in every argument (``quat_xyzw`` as in TUM files; ``quat_wxyz`` as in
COLMAP).
"""

from __future__ import annotations

import numpy as np
import torch

from recon import geometry
from recon.errors import InputError, ShapeError


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def pose_from_quat_xyzw(t: np.ndarray, quat_xyzw: np.ndarray, source: str) -> np.ndarray:
    """4x4 transform from a translation [3] and a quaternion [4] in (x, y, z, w) order.

    The quaternion must be finite with a norm within 1% of 1 (files store unit quaternions
    rounded to a few decimals; it is renormalised).

    Raises:
        InputError naming ``source`` when values are non-finite or the quaternion is not unit.
    """
    t = np.asarray(t, dtype=np.float64)
    q = np.asarray(quat_xyzw, dtype=np.float64)
    if not (np.isfinite(t).all() and np.isfinite(q).all()):
        raise InputError(f"{source}: non-finite pose (t={t.tolist()}, quat_xyzw={q.tolist()})")
    norm = np.linalg.norm(q)
    if abs(norm - 1.0) > 1e-2:
        raise InputError(f"{source}: quaternion norm {norm:.4f}, expected a unit quaternion")
    R = geometry.quat_xyzw_to_rotmat(_torch(q / norm))
    return geometry.pose_from_Rt(R, _torch(t)).numpy()


def pose_from_quat_wxyz(t: np.ndarray, quat_wxyz: np.ndarray, source: str) -> np.ndarray:
    """Like :func:`pose_from_quat_xyzw` for (w, x, y, z) order (COLMAP)."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    return pose_from_quat_xyzw(t, q[[1, 2, 3, 0]], source)  # reorder wxyz -> xyzw


def check_pose(T: np.ndarray, source: str) -> np.ndarray:
    """Check a 4x4 rigid transform (finite, orthonormal rotation with det +1, last row 0 0 0 1).

    Returns:
        ``T`` as float64.

    Raises:
        InputError naming ``source`` when it is not.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InputError(f"{source}: expected a 4x4 camera pose, got shape {list(T.shape)}")
    try:
        geometry.check_pose(_torch(T), source)
    except ShapeError as e:
        raise InputError(str(e)) from e
    return T


def rigid_from_3x4(M: np.ndarray) -> np.ndarray:
    """[3, 4] [R | t] -> [4, 4] with the row 0 0 0 1 appended."""
    T = np.eye(4)
    T[:3, :4] = M
    return T


def invert_rigid(T: np.ndarray, source: str) -> np.ndarray:
    """Inverse of a 4x4 rigid transform (world2cam <-> cam2world), checked first."""
    return geometry.invert_pose(_torch(check_pose(T, source))).numpy()
