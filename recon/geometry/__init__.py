"""Geometry core: pinhole cameras, rigid poses, quaternions, Sim(3) alignment (torch, batched).

Conventions: OpenCV camera (x right, y down, z forward), ``cam2world`` 4x4 poses, ``K`` 3x3 in
pixels with pixel centres at integer coordinates, z-depth in metres, quaternion order in the name.
"""

from .align import apply_sim3, apply_sim3_to_poses, sim3_to_matrix, umeyama_sim3
from .camera import (
    check_intrinsics,
    crop_intrinsics,
    focal_from_fov,
    fov_from_focal,
    pixel_rays,
    resize_intrinsics,
    unproject_depth,
)
from .poses import (
    check_pose,
    compose_poses,
    interpolate_poses,
    invert_pose,
    pose_from_Rt,
    quat_wxyz_to_rotmat,
    quat_xyzw_to_rotmat,
    relative_pose,
    rotation_geodesic,
    rotmat_to_quat_wxyz,
    rotmat_to_quat_xyzw,
    transform_points,
)

__all__ = [
    "apply_sim3",
    "apply_sim3_to_poses",
    "check_intrinsics",
    "check_pose",
    "compose_poses",
    "crop_intrinsics",
    "focal_from_fov",
    "fov_from_focal",
    "interpolate_poses",
    "invert_pose",
    "pixel_rays",
    "pose_from_Rt",
    "quat_wxyz_to_rotmat",
    "quat_xyzw_to_rotmat",
    "relative_pose",
    "rotation_geodesic",
    "resize_intrinsics",
    "rotmat_to_quat_wxyz",
    "rotmat_to_quat_xyzw",
    "sim3_to_matrix",
    "transform_points",
    "umeyama_sim3",
    "unproject_depth",
]
