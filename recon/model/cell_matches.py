"""Cell correspondences between two motion frames from their Lucas-Kanade flow and a depth map.

The pair motion encoder's Lucas-Kanade layer (:func:`recon.model.motion_encoder.lucas_kanade`)
gives one flow vector per cell of a ``CELL``-pixel grid of the motion frames: the current frame's
cell centre ``u`` sits at ``u + flow`` in the other frame. With the current frame's depth and
intrinsics, each textured cell becomes a 3D point in the current camera and its observed pixel
in the other camera: the input of a reprojection fit (:func:`recon.geometry.pnp.refine_pnp`).
Used by the window-pose refinement (:mod:`recon.model.window_refine`) and the keyframe revisits
(:mod:`recon.model.revisit`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recon.model.motion_encoder import CELL

TEXTURE_FLOOR = 1e-3   # smallest eigenvalue of a cell's normal matrix for its flow to count


def flow_correspondences(flow_out: torch.Tensor, motion_size: tuple[int, int], depth: torch.Tensor,
                         K: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One correspondence per cell from a Lucas-Kanade output.

    Args:
        flow_out: [B, 2 + L, gh, gw] the :func:`lucas_kanade` output (flow in motion pixels /
            CELL, then per level the log texture strength / 10, the finest last).
        motion_size: (h, w) of the motion frames.
        depth: [B, H, W] the current frame's depth (any unit; the points carry it).
        K: [B, 3, 3] intrinsics (model pixels), used for both frames.
        pool: model pixels per motion pixel.

    Returns:
        (X [B, N, 3] cell points in the current camera, x [B, N, 2] their pixels in the other
         frame (model pixels), usable [B, N] bool: textured cells whose match lies inside it),
        N = gh * gw, row-major.
    """
    B = flow_out.shape[0]
    h, w = motion_size
    grid = tuple(flow_out.shape[-2:])
    flow = flow_out[:, :2] * CELL                                                 # motion pixels
    smallest = torch.exp(flow_out[:, -1] * 10.0) - 1e-4                          # finest level
    ys = (torch.arange(grid[0], device=flow.device, dtype=flow.dtype) + 0.5) * (h / grid[0]) - 0.5
    xs = (torch.arange(grid[1], device=flow.device, dtype=flow.dtype) + 0.5) * (w / grid[1]) - 0.5
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centre = torch.stack((cx, cy), 0).expand(B, 2, *grid)                         # motion pixels
    to_model = lambda p: (p + 0.5) * pool - 0.5                                   # noqa: E731
    u, target = to_model(centre), to_model(centre + flow)
    cell_depth = torch.exp(F.adaptive_avg_pool2d(depth.clamp_min(1e-6).log().unsqueeze(1), grid)[:, 0])
    fx, fy, px, py = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    ray_x = (u[:, 0] - px[:, None, None]) / fx[:, None, None]
    ray_y = (u[:, 1] - py[:, None, None]) / fy[:, None, None]
    X = torch.stack((ray_x * cell_depth, ray_y * cell_depth, cell_depth), -1).flatten(1, 2)
    x = target.permute(0, 2, 3, 1).flatten(1, 2)
    H, W = depth.shape[-2:]
    inside = (x[..., 0] >= 0) & (x[..., 0] <= W - 1) & (x[..., 1] >= 0) & (x[..., 1] <= H - 1)
    usable = inside & (smallest.flatten(1) > TEXTURE_FLOOR) & torch.isfinite(X).all(-1)
    return X, x, usable
