"""Pinhole camera helpers: unprojection, per-pixel rays, intrinsics under resize / crop, fov.

Conventions (docs/conventions.md): OpenCV camera (x right, y down, z forward); ``K`` is
3x3 in pixels; pixel ``(u, v)`` (column, row) has its centre at integer coordinates, so
``x = (u - cx) / fx * z``; depth is z-depth in metres (0 = invalid). All functions are torch,
batched over any leading dimensions, float32 / float64, and differentiable.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.depth import unproject_meshgrid

from recon.errors import ShapeError, check_shape


def check_intrinsics(K: torch.Tensor, name: str = "K") -> None:
    """Raise :class:`ShapeError` unless ``K`` is ``[..., 3, 3]``, finite, with fx, fy != 0.

    Args:
        K: intrinsics [..., 3, 3] in pixels.
        name: the argument's name for the message.
    """
    check_shape(K, "* 3 3", name)
    if not torch.isfinite(K).all():
        raise ShapeError(f"{name}: expected finite intrinsics, got non-finite values")
    focal = torch.stack((K[..., 0, 0], K[..., 1, 1]), dim=-1)
    if (focal == 0).any():
        raise ShapeError(f"{name}: singular intrinsics, expected fx != 0 and fy != 0, got fx, fy = 0")


def pixel_rays(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Ray direction through every pixel centre, scaled so that z = 1 (OpenCV camera).

    Args:
        K: intrinsics [..., 3, 3] in pixels.
        height: image height H in pixels.
        width: image width W in pixels.

    Returns:
        rays [..., H, W, 3] with ``rays[..., v, u, :] = ((u - cx) / fx, (v - cy) / fy, 1)``.

    Example:
        >>> K = torch.tensor([[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]])
        >>> pixel_rays(K, 2, 3)[1, 2]
        tensor([0.5000, 0.0000, 1.0000])
    """
    check_intrinsics(K)
    if height < 1 or width < 1:
        raise ShapeError(f"pixel_rays: expected height, width >= 1, got {height}x{width}")
    lead = K.shape[:-2]
    # kornia builds the grid for exactly [B, 3, 3]: flatten the leading dims and restore them.
    rays = unproject_meshgrid(height, width, K.reshape(-1, 3, 3), False, K.device, K.dtype)
    return rays.reshape(*lead, height, width, 3)


def unproject_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift a z-depth map to camera-frame 3D points (OpenCV camera, metres).

    Args:
        depth: z-depth [..., H, W] in metres (0 = invalid; such pixels map to the origin).
        K: intrinsics [..., 3, 3] in pixels; leading dims broadcast against depth's.

    Returns:
        points [..., H, W, 3] in the camera frame: ``((u - cx) z / fx, (v - cy) z / fy, z)``.

    Example:
        >>> K = torch.tensor([[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]])
        >>> unproject_depth(torch.full((2, 3), 4.0), K)[1, 2]
        tensor([2., 0., 4.])
    """
    check_shape(depth, "* H W", "depth")
    check_intrinsics(K)
    try:
        lead = torch.broadcast_shapes(depth.shape[:-2], K.shape[:-2])
    except RuntimeError as err:
        raise ShapeError(
            f"depth {list(depth.shape)} and K {list(K.shape)}: leading dims must broadcast"
        ) from err
    rays = pixel_rays(K, depth.shape[-2], depth.shape[-1])
    return (rays * depth[..., None]).expand(*lead, *depth.shape[-2:], 3)


def resize_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics of an image resized by (sx, sy), pixel centres at integers.

    fx, fy scale by sx, sy; a centre maps as ``c' = (c + 0.5) * s - 0.5`` (docs/conventions.md).

    Args:
        K: intrinsics [..., 3, 3] in pixels of the original image.
        sx: new width / old width.
        sy: new height / old height.

    Returns:
        K' [..., 3, 3] of the resized image.
    """
    check_shape(K, "* 3 3", "K")
    if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
        raise ShapeError(f"resize_intrinsics: expected finite scales > 0, got sx={sx}, sy={sy}")
    scale = K.new_tensor([[sx, sx, sx], [sy, sy, sy], [1.0, 1.0, 1.0]])
    # Shift to corner-at-0 coordinates, scale, shift back: c' = (c + 0.5) s - 0.5.
    shift = K.new_tensor([[0.0, 0.0, 0.5 * (sx - 1.0)], [0.0, 0.0, 0.5 * (sy - 1.0)], [0.0, 0.0, 0.0]])
    return K * scale + shift


def crop_intrinsics(K: torch.Tensor, x0: float, y0: float) -> torch.Tensor:
    """Intrinsics of a crop whose top-left pixel is (x0, y0) of the original image.

    Args:
        K: intrinsics [..., 3, 3] in pixels.
        x0: column of the crop's first pixel.
        y0: row of the crop's first pixel.

    Returns:
        K' [..., 3, 3] with cx' = cx - x0, cy' = cy - y0.
    """
    check_shape(K, "* 3 3", "K")
    offset = K.new_tensor([[0.0, 0.0, -x0], [0.0, 0.0, -y0], [0.0, 0.0, 0.0]])
    return K + offset


def focal_from_fov(fov: torch.Tensor, size: float | torch.Tensor) -> torch.Tensor:
    """Focal length in pixels from a full field of view: ``f = (size / 2) / tan(fov / 2)``.

    Args:
        fov: field of view [...] in radians, in (0, pi).
        size: image extent along the same axis in pixels (width for fov_w, height for fov_h).

    Returns:
        focal [...] in pixels.
    """
    return (0.5 * size) / torch.tan(0.5 * fov)


def fov_from_focal(focal: torch.Tensor, size: float | torch.Tensor) -> torch.Tensor:
    """Full field of view in radians from a focal length: ``fov = 2 atan((size / 2) / f)``.

    Args:
        focal: focal length [...] in pixels (> 0).
        size: image extent along the same axis in pixels.

    Returns:
        fov [...] in radians.
    """
    return 2.0 * torch.atan((0.5 * size) / focal)
