"""Pose helpers for the readers (numpy, float64): quaternions via scipy, rigid checks, inverses.

Conventions: 4x4 ``cam2world`` with an OpenCV camera (x right, y down, z forward). Quaternion
order is named in every argument (``quat_xyzw`` as in TUM files and scipy; ``quat_wxyz`` as in
COLMAP).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from recon.errors import InputError


def pose_from_quat_xyzw(t: np.ndarray, quat_xyzw: np.ndarray, source: str) -> np.ndarray:
    """4x4 transform from a translation [3] and a quaternion [4] in (x, y, z, w) order.

    The quaternion must be finite with norm within 1% of 1 (files store unit quaternions rounded
    to a few decimals; it is renormalised).

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
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q / norm).as_matrix()  # scipy: scalar-last (x, y, z, w)
    T[:3, 3] = t
    return T


def pose_from_quat_wxyz(t: np.ndarray, quat_wxyz: np.ndarray, source: str) -> np.ndarray:
    """Like :func:`pose_from_quat_xyzw` for (w, x, y, z) order (COLMAP)."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    return pose_from_quat_xyzw(t, q[[1, 2, 3, 0]], source)  # reorder wxyz -> xyzw


def check_pose(T: np.ndarray, source: str, tol: float = 1e-3) -> np.ndarray:
    """Check a 4x4 rigid transform (finite, rotation orthonormal with det +1, last row 0 0 0 1).

    Returns:
        ``T`` as float64.

    Raises:
        InputError naming ``source`` when it is not.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InputError(f"{source}: expected a finite 4x4 camera pose, got {T.tolist()}")
    R = T[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > tol or abs(np.linalg.det(R) - 1.0) > tol:
        raise InputError(f"{source}: pose rotation is not orthonormal with det +1: {R.round(4).tolist()}")
    if np.abs(T[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > tol:
        raise InputError(f"{source}: pose last row should be 0 0 0 1, got {T[3].tolist()}")
    return T


def rigid_from_3x4(M: np.ndarray) -> np.ndarray:
    """[3, 4] [R | t] -> [4, 4] with the row 0 0 0 1 appended."""
    T = np.eye(4)
    T[:3, :4] = M
    return T


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform (world2cam <-> cam2world), exact: [R^T | -R^T t]."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out
