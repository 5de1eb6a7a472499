"""Evaluation: pose, depth and point-cloud metrics (field-standard definitions)."""

from .cloud_metrics import CloudMetrics, cloud_metrics, estimate_normals, icp_refine
from .depth_metrics import DepthMetrics, depth_metrics
from .pose_metrics import (
    PoseMetrics,
    align_trajectory,
    associate_trajectories,
    per_frame_ate,
    pose_metrics,
)

__all__ = [
    "CloudMetrics",
    "DepthMetrics",
    "PoseMetrics",
    "align_trajectory",
    "associate_trajectories",
    "cloud_metrics",
    "depth_metrics",
    "estimate_normals",
    "icp_refine",
    "per_frame_ate",
    "pose_metrics",
]
