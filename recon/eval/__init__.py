"""Evaluation: pose, depth and point-cloud metrics (field-standard definitions)."""

from .cloud_metrics import CloudMetrics, cloud_metrics, estimate_normals, icp_refine
from .depth_metrics import DepthMetrics, depth_metrics
from .pose_metrics import (
    PoseMetrics,
    align_trajectory,
    associate_trajectories,
    ate_vs_static,
    constant_velocity_ate,
    constant_velocity_trajectory,
    per_frame_ate,
    pose_baselines,
    pose_metrics,
    static_camera_ate,
    static_camera_trajectory,
)

__all__ = [
    "CloudMetrics",
    "DepthMetrics",
    "PoseMetrics",
    "align_trajectory",
    "associate_trajectories",
    "ate_vs_static",
    "cloud_metrics",
    "constant_velocity_ate",
    "constant_velocity_trajectory",
    "depth_metrics",
    "estimate_normals",
    "icp_refine",
    "per_frame_ate",
    "pose_baselines",
    "pose_metrics",
    "static_camera_ate",
    "static_camera_trajectory",
]
