"""Pose corrections at revisited places, against a fixed-size bank of earlier keyframes.

Online motion averaging (:mod:`recon.model.readout`) composes window-relative poses, so its error
grows with the path: odometry. When the camera comes back to a place it has seen, the pose fixed
then is a better anchor than the chain of relative poses since. Per frame ``n`` (after the
window fusion gave the odometry pose ``P``; ``d`` = the frame's median predicted depth):

1. **Retrieve.** Candidates are keyframes older than the window and ``min_age`` whose thumbnail (the grey
   motion frame pooled to ``THUMBNAIL``, zero mean, unit norm) correlates with the frame's by at
   least ``min_similarity`` and whose camera is within ``search_distance * d`` and ``search_deg``
   of ``P``; or, wherever ``P`` puts them, whose thumbnail correlates by ``revisit_similarity``
   (after a long loop the estimate may be far off). Of those within ``SIMILARITY_TIE`` of the best
   correlation, the oldest keyframe is taken: its pose carries the least drift.
2. **Measure.** Pyramidal Lucas-Kanade flow from the frame to the keyframe on the pair motion
   encoder's cell grid (:func:`recon.model.motion_encoder.lucas_kanade`, the same layer) gives one
   correspondence per textured cell: the cell's 3D point from the frame's predicted depth (metres)
   and intrinsics, and its pixel in the keyframe.
3. **Fit.** A robust reprojection fit (:func:`recon.geometry.pnp.refine_pnp`, Cauchy) gives the
   frame's pose ``T`` in the keyframe's camera, started twice (at the odometry ``inv(A_kf) @ P``
   and at the identity, the two views being alike) keeping the fit with more inliers; the
   candidate is ``C = A_kf @ T``.
4. **Verify and correct.** ``C`` is accepted when enough cells are inliers (``min_inliers``,
   ``min_inlier_fraction``), ``T`` keeps the views overlapping (``search_distance * d``,
   ``search_deg``), ``C`` is finite, and its change from ``P`` is within ``max_correction * d``
   and ``max_correction_deg`` (unless the keyframe passed ``revisit_similarity``: a loop closure
   may correct a large drift); then the pose moves toward it by ``gain``
   (:func:`recon.geometry.interpolate_poses`). The following frames inherit the correction through
   the window's fixed poses, so a revisit converges over about ``1 / gain`` frames, the noise of
   single fits is filtered, and one wrong fit moves the pose by ``gain`` of its error.
5. **Insert.** The frame becomes a keyframe when no keyframe's camera is within ``spacing * d``
   and ``spacing_deg`` of its final pose (and its pose is not in the middle of a correction). A
   full bank replaces its least recently used keyframe (inserted or matched longest ago): places
   that keep being revisited stay.

Steps 1-4 run at every ``measure_every``-th frame (``n % measure_every == 0``). A frame between
two measurements carries the last accepted one: the world-frame correction that remained after it
(``held = C @ inv(P')``, ``P'`` the corrected pose) puts the next odometry pose where the
measurement would, so the pose keeps moving toward it by ``gain`` per frame and a revisit converges
as fast, at a ``1 / measure_every`` share of the measurement cost (loop closure at a lower rate
than tracking, as SLAM systems run it).

Everything is batched torch and a deterministic function of its inputs, so the clip path and the
streaming step agree; the measurement carries no gradient (no parameters, like the Lucas-Kanade
layer). Cost of a measured frame: one correlation with K thumbnails, one Lucas-Kanade pair, one
6x6 fit from two starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recon.geometry import interpolate_poses, invert_pose, rotation_geodesic
from recon.geometry.pnp import refine_pnp
from recon.model.cell_matches import flow_correspondences
from recon.model.config import RevisitConfig
from recon.model.motion_encoder import CELL, lucas_kanade
from recon.model.state import KeyframeBank

THUMBNAIL = (12, 16)
SIMILARITY_TIE = 0.05


@dataclass
class RevisitInputs:
    """What the readout needs per frame to correct poses at revisits.

    Attributes:
        frames: [B, T, 1, h, w] grey motion frames of the T frames of the call.
        unit_depth: [B, T, H, W] predicted depth in the model's unit scale (times the metric
            scale = metres).
        K: [B, T, 3, 3] intrinsics of the frames (pixels).
        pool: motion-frame pooling factor (model pixels per motion pixel).
        cfg: the settings.
    """

    frames: torch.Tensor
    unit_depth: torch.Tensor
    K: torch.Tensor
    pool: int
    cfg: RevisitConfig


def thumbnails(frames: torch.Tensor) -> torch.Tensor:
    """Grey motion frames [M, 1, h, w] -> zero-mean unit-norm thumbnails [M, D], D = 12 * 16."""
    t = F.adaptive_avg_pool2d(frames.float(), THUMBNAIL).flatten(1)
    t = t - t.mean(1, keepdim=True)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-6)


def empty_keyframe_bank(batch_size: int, capacity: int, frame_shape: tuple[int, ...],
                        device: torch.device | str | None) -> KeyframeBank:
    """A bank of ``capacity`` empty slots for frames of ``frame_shape`` (1, h, w)."""
    B, K = batch_size, capacity
    return KeyframeBank(
        torch.zeros(B, K, *frame_shape, device=device),
        torch.zeros(B, K, THUMBNAIL[0] * THUMBNAIL[1], device=device),
        torch.eye(4, device=device).repeat(B, K, 1, 1),
        torch.full((B, K), -1, dtype=torch.int64, device=device),
        torch.full((B, K), -1, dtype=torch.int64, device=device),
        torch.zeros(B, dtype=torch.int64, device=device),
        torch.eye(4, device=device).repeat(B, 1, 1),
        torch.zeros(B, dtype=torch.bool, device=device))


def median_depth(depth: torch.Tensor) -> torch.Tensor:
    """``d``, the scale of the distances: depth [B, H, W] (metres) -> its median per frame [B] (>= 1e-6)."""
    return depth.detach().flatten(1).median(1).values.clamp_min(1e-6)


def _distances(bank: KeyframeBank, pose: torch.Tensor, depth_scale: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(camera distance / d [B, K], rotation angle in degrees [B, K]) of each keyframe to ``pose``."""
    shift = (bank.cam2world[..., :3, 3] - pose[:, None, :3, 3]).norm(dim=-1) / depth_scale[:, None]
    turn = torch.rad2deg(rotation_geodesic(bank.cam2world[..., :3, :3], pose[:, None, :3, :3]))
    return shift, turn


def select_keyframe(bank: KeyframeBank, thumbnail: torch.Tensor, pose: torch.Tensor,
                    depth_scale: torch.Tensor, frame_index: int, window: int, cfg: RevisitConfig
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 1: (slot [B] int64, found [B] bool, similarity [B]) of the keyframe to measure against.

    A keyframe older than the window is a candidate when it looks like the frame
    (``min_similarity``) and the pose estimate puts it near (``search_distance``, ``search_deg``),
    or, whatever the estimate says, when it looks very much like it (``revisit_similarity``): the
    estimate may have drifted far by the time a place comes back.
    """
    shift, turn = _distances(bank, pose, depth_scale)
    similarity = (bank.thumbnails * thumbnail[:, None]).sum(-1)                   # [B, K]
    near = (shift < cfg.search_distance) & (turn < cfg.search_deg) & (similarity >= cfg.min_similarity)
    candidate = ((bank.index >= 0) & (bank.index < frame_index - max(window, cfg.min_age))
                 & (near | (similarity >= cfg.revisit_similarity)))
    best = torch.where(candidate, similarity, torch.full_like(similarity, -2.0)).amax(1, keepdim=True)
    near_best = candidate & (similarity >= best - SIMILARITY_TIE)
    oldest = torch.where(near_best, bank.index, torch.full_like(bank.index, torch.iinfo(torch.int64).max))
    slot = oldest.argmin(1)
    rows = torch.arange(slot.shape[0], device=slot.device)
    return slot, candidate.any(1), similarity[rows, slot]


def cell_correspondences(current: torch.Tensor, keyframe: torch.Tensor, depth: torch.Tensor,
                         K: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 2: one correspondence per cell of the motion encoder's grid
    (:func:`recon.model.cell_matches.flow_correspondences` of the pair's Lucas-Kanade flow).

    Args:
        current, keyframe: [B, 1, h, w] grey motion frames.
        depth: [B, H, W] the current frame's depth (metres).
        K: [B, 3, 3] intrinsics (model pixels), used for both frames.
        pool: model pixels per motion pixel.

    Returns:
        (X [B, N, 3] cell points in the current camera, x [B, N, 2] their pixels in the keyframe
         (model pixels), usable [B, N] bool: textured cells whose match lies inside the keyframe).
    """
    h, w = current.shape[-2:]
    grid = (max(h // CELL, 1), max(w // CELL, 1))
    return flow_correspondences(lucas_kanade(current.float(), keyframe.float(), grid), (h, w), depth, K, pool)


def correct_at_revisit(pose: torch.Tensor, bank: KeyframeBank, frame: torch.Tensor,
                       thumbnail: torch.Tensor, depth: torch.Tensor, depth_scale: torch.Tensor,
                       K: torch.Tensor,
                       frame_index: int, window: int, pool: int, cfg: RevisitConfig
                       ) -> tuple[torch.Tensor, KeyframeBank, torch.Tensor]:
    """Steps 1-4 for one frame of every sequence of the batch.

    Args:
        pose: [B, 4, 4] the odometry pose of frame ``frame_index``.
        bank: the keyframes so far.
        frame: [B, 1, h, w] its grey motion frame; thumbnail: [B, D].
        depth: [B, H, W] its depth in metres; depth_scale: [B] its :func:`median_depth`;
            K: [B, 3, 3].
        frame_index: its absolute index. window: the farthest slot offset (S without long
            slots), frames whose poses the window fusion used.
        pool: model pixels per motion pixel.
        cfg: the settings.

    Returns:
        (pose [B, 4, 4] corrected where accepted, the bank with ``used`` and ``corrections``
         updated, settled [B] bool: no correction larger than half the keyframe spacing was
         applied, so the pose may seed a keyframe).
    """
    B = pose.shape[0]
    if frame_index % cfg.measure_every:
        return _apply_held(pose, bank, depth_scale, cfg)
    rows = torch.arange(B, device=pose.device)
    slot, found, similarity = select_keyframe(bank, thumbnail, pose, depth_scale, frame_index, window, cfg)
    settled = torch.ones(B, dtype=torch.bool, device=pose.device)
    if not bool(found.any()):
        return pose, dataclasses.replace(bank, held_valid=torch.zeros_like(bank.held_valid)), settled
    with torch.no_grad():
        kf_pose = bank.cam2world[rows, slot]
        X, x, usable = cell_correspondences(frame, bank.frames[rows, slot], depth.detach(), K.detach(), pool)
        # Two starts: the odometry, and "the same view" (the keyframe was found by its look).
        odometry = invert_pose(kf_pose, check=False) @ pose.detach()
        starts = torch.cat((odometry, torch.eye(4, dtype=pose.dtype, device=pose.device).expand(B, 4, 4)))
        fits, residual = refine_pnp(X.repeat(2, 1, 1), x.repeat(2, 1, 1), K.detach().repeat(2, 1, 1),
                                    starts, usable.to(X.dtype).repeat(2, 1), cfg.inlier_px)
        counts = (usable.repeat(2, 1) & (residual < cfg.inlier_px)).sum(1).view(2, B)
        pick = counts.argmax(0)                                                    # [B]
        T = fits.view(2, B, 4, 4)[pick, rows]
        inliers = counts[pick, rows]
        fraction = inliers / usable.sum(1).clamp_min(1)
        eye3 = torch.eye(3, dtype=T.dtype, device=T.device)
        overlap = ((T[:, :3, 3].norm(dim=-1) < cfg.search_distance * depth_scale)
                   & (torch.rad2deg(rotation_geodesic(T[:, :3, :3], eye3)) < cfg.search_deg))
        candidate = kf_pose @ T
        shift = (candidate[:, :3, 3] - pose[:, :3, 3].detach()).norm(dim=-1) / depth_scale
        turn = torch.rad2deg(rotation_geodesic(candidate[:, :3, :3], pose[:, :3, :3].detach()))
        bounded = (shift <= cfg.max_correction) & (turn <= cfg.max_correction_deg)
        accept = (found & (inliers >= cfg.min_inliers) & (fraction >= cfg.min_inlier_fraction) & overlap
                  & (bounded | (similarity >= cfg.revisit_similarity))
                  & torch.isfinite(candidate).flatten(1).all(1))
        candidate = torch.where(accept[:, None, None], candidate, pose.detach())
    corrected = interpolate_poses(pose, candidate, cfg.gain)
    pose = torch.where(accept[:, None, None], corrected, pose)
    settled = ~accept | ((shift < 0.5 * cfg.spacing) & (turn < 0.5 * cfg.spacing_deg))
    hit = F.one_hot(slot, bank.index.shape[1]).bool() & accept[:, None]
    held = _remaining(candidate, pose, accept, bank.held)
    bank = dataclasses.replace(bank, used=torch.where(hit, frame_index, bank.used),
                               corrections=bank.corrections + accept.to(torch.int64),
                               held=held, held_valid=accept)
    return pose, bank, settled


def _remaining(candidate: torch.Tensor, pose: torch.Tensor, active: torch.Tensor, held: torch.Tensor
               ) -> torch.Tensor:
    """World-frame correction ``candidate @ inv(pose)`` [B, 4, 4] still to apply where ``active``."""
    rest = candidate @ invert_pose(pose.detach(), check=False)
    return torch.where(active[:, None, None], rest.to(held.dtype), held)


def _apply_held(pose: torch.Tensor, bank: KeyframeBank, depth_scale: torch.Tensor, cfg: RevisitConfig
                ) -> tuple[torch.Tensor, KeyframeBank, torch.Tensor]:
    """A frame between measurements: the last measurement's remaining correction, carried.

    The corrected pose of the measured frame is ``P'``, its measurement ``C``; the next frame's
    odometry composes ``P' @ rel``, so ``held @ P_next`` with ``held = C @ inv(P')`` is where the
    measurement puts it (``C @ rel``). The pose moves toward that by ``gain``, as at a measurement,
    and what remains is held on to the next measurement. Returns what :func:`correct_at_revisit` does.
    """
    active = bank.held_valid
    settled = torch.ones_like(active)
    if not bool(active.any()):
        return pose, bank, settled
    candidate = bank.held.to(pose.dtype) @ pose.detach()
    shift = (candidate[:, :3, 3] - pose[:, :3, 3].detach()).norm(dim=-1) / depth_scale
    turn = torch.rad2deg(rotation_geodesic(candidate[:, :3, :3], pose[:, :3, :3].detach()))
    pose = torch.where(active[:, None, None], interpolate_poses(pose, candidate, cfg.gain), pose)
    settled = ~active | ((shift < 0.5 * cfg.spacing) & (turn < 0.5 * cfg.spacing_deg))
    return pose, dataclasses.replace(bank, corrections=bank.corrections + active.to(torch.int64),
                                     held=_remaining(candidate, pose, active, bank.held)), settled


def insert_keyframe(bank: KeyframeBank, frame: torch.Tensor, thumbnail: torch.Tensor,
                    pose: torch.Tensor, depth_scale: torch.Tensor, frame_index: int, settled: torch.Tensor,
                    cfg: RevisitConfig) -> KeyframeBank:
    """Step 5: the bank after frame ``frame_index`` (final pose [B, 4, 4], ``median_depth`` [B])."""
    pose = pose.detach()
    shift, turn = _distances(bank, pose, depth_scale)
    near = (bank.index >= 0) & (shift < cfg.spacing) & (turn < cfg.spacing_deg)
    insert = ~near.any(1) & settled & torch.isfinite(pose).flatten(1).all(1)
    if not bool(insert.any()):
        return bank
    rows = torch.nonzero(insert).flatten()
    slot = torch.where(bank.index < 0, -1, bank.used).argmin(1)[rows]     # an empty slot, else LRU
    frames, thumbs, poses = bank.frames.clone(), bank.thumbnails.clone(), bank.cam2world.clone()
    index, used = bank.index.clone(), bank.used.clone()
    frames[rows, slot] = frame[rows].to(frames.dtype)
    thumbs[rows, slot] = thumbnail[rows]
    poses[rows, slot] = pose[rows]
    index[rows, slot] = frame_index
    used[rows, slot] = frame_index
    return dataclasses.replace(bank, frames=frames, thumbnails=thumbs, cam2world=poses, index=index,
                               used=used)
