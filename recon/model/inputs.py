"""Checks of the tensors users pass to the model, with errors that print expected and actual."""

from __future__ import annotations

import torch

from recon.errors import ShapeError


def check_video(video: torch.Tensor, image_size: tuple[int, int],
                name: str) -> tuple[int, int, int, int, int]:
    """Check a clip ``[B, T, 3, H, W]`` float RGB in [0, 1] of the model's (H, W); return its shape.

    Raises:
        ShapeError: not a tensor, not floating point, wrong rank, channel count or frame size.
    """
    if not isinstance(video, torch.Tensor):
        raise ShapeError(f"{name}: expected a torch.Tensor [B, T, 3, H, W], got {type(video).__name__}")
    if video.dim() != 5:
        raise ShapeError(f"{name}: expected shape [B, T, 3, H, W], got {list(video.shape)}")
    if not video.is_floating_point():
        raise ShapeError(
            f"{name}: expected float RGB in [0, 1], got dtype {video.dtype} (divide uint8 by 255)")
    B, T, C, H, W = video.shape
    if C != 3:
        raise ShapeError(f"{name}: expected 3 colour channels (RGB), got {C} in shape {list(video.shape)}")
    if (H, W) != tuple(image_size):
        raise ShapeError(
            f"{name}: expected frames of H x W = {image_size[0]} x {image_size[1]} (the model's image_size), "
            f"got {H} x {W}; resize/crop the frames (and their intrinsics) first"
        )
    if B == 0 or T == 0:
        raise ShapeError(f"{name}: expected at least one sequence and one frame, got {list(video.shape)}")
    return B, T, C, H, W


def check_intrinsics(K: torch.Tensor | None, B: int, T: int, name: str) -> torch.Tensor | None:
    """Known intrinsics ``[B, 3, 3]`` (one per sequence) or ``[B, T, 3, 3]`` -> float32 [B, T, 3, 3].

    Raises:
        ShapeError: wrong shape or non-positive focal lengths.
    """
    if K is None:
        return None
    if not isinstance(K, torch.Tensor) or K.shape not in ((B, 3, 3), (B, T, 3, 3)):
        shape = list(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise ShapeError(f"{name}: expected intrinsics of shape [{B}, 3, 3] or [{B}, {T}, 3, 3], got {shape}")
    K = K.float()
    if K.dim() == 3:
        K = K.unsqueeze(1).expand(B, T, 3, 3)
    if not (K[..., 0, 0] > 0).all() or not (K[..., 1, 1] > 0).all():
        raise ShapeError(f"{name}: focal lengths K[0, 0] and K[1, 1] must be > 0 (pixels)")
    return K
