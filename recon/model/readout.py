"""The stateful part of the pose readout: metric-scale smoothing and online motion averaging.

Per frame ``n`` (absolute index in its sequence), given the metric readout's raw log-scale and the
camera trunk's slot poses ``R[n, d]`` (frame n in the camera of frame ``n - d``, unit scale; d runs
over the slot offsets, the window's ``1 .. S`` then any long slots,
:func:`recon.model.config.slot_offsets`):

1. ``log_s[n] = log_s[n-1] + a_n (raw[n] - log_s[n-1])`` with ``a_n = max(1 / (n + 1), scale_ema)``:
   the running mean of the readouts, then an EMA (frame 0: ``a = 1``); ``s = exp(log_s)``
   multiplies every window translation (and the depth, in the model).
2. Frame 0 is the identity (world = first camera). Later frames fuse the candidates
   ``A[n - d] @ R_metric[n, d]`` over the slots with ``n - d >= 0`` (the history keeps the fixed
   poses of the last ``max(d)`` frames)
   (:func:`recon.model.motion_averaging.fuse_pose_candidates`); a frame with no finite
   candidate keeps the previous pose and is counted in ``PoseHistory.fallbacks``.
3. With revisit inputs: the pose is corrected against the keyframe bank and the frame may become
   a keyframe (:mod:`recon.model.revisit`); frame 0 (the identity) is always the first keyframe.

The clip path and the streaming step both call :func:`stream_pose_readout` (a loop over the T
frames of the call, O(S^2) small ops each), so ``model(video)`` equals the ``model.step`` loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from kornia.geometry.conversions import quaternion_to_rotation_matrix

from recon.geometry import pose_from_Rt
from recon.model.bounded import log_tail_clamp
from recon.model.motion_averaging import fuse_pose_candidates
from recon.model.revisit import (
    RevisitInputs,
    correct_at_revisit,
    empty_keyframe_bank,
    insert_keyframe,
    median_depth,
    thumbnails,
)
from recon.model.state import PoseHistory


def empty_pose_history(batch_size: int, slots: int, device: torch.device | str | None,
                       frame_shape: tuple[int, ...] = (1, 1, 1), keyframes: int = 0,
                       reach: int | None = None) -> PoseHistory:
    """The history before frame 0: ``reach`` (default ``slots``) identity poses, log-scale 0, no
    fallbacks, ``slots`` zero frames of ``frame_shape`` (C, h, w) for the pair motion encoder, an
    empty bank of ``keyframes`` slots, no calibration evidence."""
    eye = torch.eye(4, device=device).repeat(batch_size, slots if reach is None else reach, 1, 1)
    return PoseHistory(eye, torch.zeros(batch_size, device=device),
                       torch.zeros(batch_size, dtype=torch.int64, device=device),
                       torch.zeros(batch_size, slots, *frame_shape, device=device),
                       empty_keyframe_bank(batch_size, keyframes, frame_shape, device),
                       torch.zeros(batch_size, 2, 2, device=device),
                       torch.zeros(batch_size, 2, device=device))


def window_poses(translation: torch.Tensor, quat_wxyz: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """4x4 window poses from the trunk's outputs: translation [..., S, 3] (unit scale), quaternion
    [..., S, 4] (w x y z), scale [...] -> [..., S, 4, 4], translation times the scale (metres)."""
    # kornia's conversion directly (w, x, y, z): the checked one would refuse a non-finite estimate,
    # which the fusion must see and drop.
    return pose_from_Rt(quaternion_to_rotation_matrix(quat_wxyz), translation * scale[..., None, None])


def offsets_tensor(slots: int | Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """The slot offsets as an int64 tensor [P]: ``1 .. S`` for an int S, else the offsets given."""
    if isinstance(slots, int):
        return torch.arange(1, slots + 1, device=device)
    return torch.as_tensor(list(slots), dtype=torch.int64, device=device)


def slot_frame_index(num_frames: int, slots: int | Sequence[int], before: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Where the frame of each pose slot sits, in a sequence of ``before`` earlier frames
    followed by the ``num_frames`` current ones (oldest first).

    Args:
        slots: S (the window slots, offsets ``1 .. S``) or the slot offsets themselves.

    Returns:
        [num_frames, P] int64: entry (t, k) = ``before + t - offsets[k]`` (negative: before the
        first available frame).
    """
    t = torch.arange(num_frames, device=device).view(num_frames, 1)
    return before + t - offsets_tensor(slots, device)


def stream_pose_readout(raw_log_scale: torch.Tensor, translation: torch.Tensor, quat_wxyz: torch.Tensor,
                        history: PoseHistory, frame_index: int, scale_ema: float,
                        revisit: RevisitInputs | None = None, offsets: Sequence[int] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PoseHistory]:
    """Run the readout over T consecutive frames that follow ``history``.

    Args:
        raw_log_scale: [B, T] per-frame log-scale readouts.
        translation: [B, T, P, 3] slot translations in unit scale.
        quat_wxyz: [B, T, P, 4] slot rotations.
        history: the readout state before the first of the T frames; its ``cam2world`` holds at
            least ``max(offsets)`` poses.
        frame_index: absolute index of the first frame.
        scale_ema: the EMA weight floor.
        revisit: per-frame inputs of the keyframe-revisit correction (None: window odometry only,
            the keyframe bank unchanged).
        offsets: the frame offset of each of the P slots (default ``1 .. P``).

    Returns:
        (cam2world [B, T, 4, 4], scale [B, T] > 0, slot poses [B, T, P, 4, 4] in metres,
         the history after the last frame).
    """
    B, T, S = translation.shape[:3]
    slot_offset = offsets_tensor(S if offsets is None else offsets, translation.device)
    if slot_offset.numel() != S or int(slot_offset.max()) > history.cam2world.shape[1]:
        raise ValueError(f"stream_pose_readout: {S} slots with offsets {slot_offset.tolist()} need as many "
                         f"offsets and a pose history of max(offsets) frames, "
                         f"got {history.cam2world.shape[1]}")
    reach = int(slot_offset.max())   # the oldest frame a candidate is anchored on
    log_s, poses, fallbacks, bank = history.log_scale, history.cam2world, history.fallbacks, history.keyframes
    if revisit is not None:
        thumbs = thumbnails(revisit.frames.flatten(0, 1)).view(B, T, -1)
    scales, absolute, windows = [], [], []
    for t in range(T):
        n = frame_index + t
        a = max(1.0 / (n + 1), scale_ema)
        log_s = raw_log_scale[:, t] if n == 0 else log_s + a * (raw_log_scale[:, t] - log_s)
        scale = torch.exp(log_tail_clamp(log_s, -12.0, 12.0))
        rel = window_poses(translation[:, t], quat_wxyz[:, t], scale)          # [B, S, 4, 4]
        if n == 0:
            pose = torch.eye(4, dtype=rel.dtype, device=rel.device).expand(B, 4, 4)
        else:
            valid = (n - slot_offset >= 0).expand(B, S)
            fused, none_valid = fuse_pose_candidates(poses[:, slot_offset - 1] @ rel, valid)
            pose = torch.where(none_valid[:, None, None], poses[:, 0], fused)
            fallbacks = fallbacks + none_valid.to(fallbacks.dtype)
        if revisit is not None:
            depth = revisit.unit_depth[:, t] * scale[:, None, None]
            depth_scale = median_depth(depth)
            settled = torch.ones(B, dtype=torch.bool, device=pose.device)
            if n > 0:
                pose, bank, settled = correct_at_revisit(
                    pose, bank, revisit.frames[:, t], thumbs[:, t], depth, depth_scale, revisit.K[:, t], n,
                    reach, revisit.pool, revisit.cfg)
            bank = insert_keyframe(bank, revisit.frames[:, t], thumbs[:, t], pose, depth_scale, n, settled,
                                   revisit.cfg)
        poses = torch.cat((pose.unsqueeze(1), poses[:, :-1]), dim=1)
        scales.append(scale)
        absolute.append(pose)
        windows.append(rel)
    new = dataclasses.replace(history, cam2world=poses, log_scale=log_s, fallbacks=fallbacks, keyframes=bank)
    return torch.stack(absolute, 1), torch.stack(scales, 1), torch.stack(windows, 1), new
