"""The 9-value camera encoding of the model output ``pose_enc`` and the fov <-> intrinsics conversion.

``pose_enc [..., 9]`` = translation (3, metres) | quaternion (4, **w x y z** order) | fov_h | fov_w
(radians). Translation and quaternion describe the cam2world pose in the world of the first
camera (OpenCV axes: x right, y down, z forward). The intrinsics have the principal point at the
image centre ``((W - 1) / 2, (H - 1) / 2)`` (pixel centres at integer coordinates) and
``f = (size / 2) / tan(fov / 2)``.
"""

from __future__ import annotations

import torch

from recon.geometry import focal_from_fov, fov_from_focal


def fov_to_intrinsics(fov_h: torch.Tensor, fov_w: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Fields of view [...] (radians) -> K [..., 3, 3] in pixels, centred principal point."""
    fy, fx = focal_from_fov(fov_h, height), focal_from_fov(fov_w, width)
    K = torch.zeros(*fov_h.shape, 3, 3, dtype=fov_h.dtype, device=fov_h.device)
    K[..., 0, 0], K[..., 1, 1] = fx, fy
    K[..., 0, 2], K[..., 1, 2] = (width - 1) / 2.0, (height - 1) / 2.0
    K[..., 2, 2] = 1.0
    return K


def intrinsics_to_fov(K: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K [..., 3, 3] pixels -> (fov_h, fov_w) [...] radians (the principal point is ignored)."""
    return fov_from_focal(K[..., 1, 1], height), fov_from_focal(K[..., 0, 0], width)
