"""StreamReconModel: video -> per-frame depth, confidence, intrinsics, pose and world points."""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from recon.errors import ShapeError
from recon.geometry import rotmat_to_quat_wxyz, transform_points, unproject_depth
from recon.model.aggregator import Aggregator
from recon.model.config import ModelConfig, slot_offsets
from recon.model.heads import CameraTrunk, DenseHead, MetricReadout
from recon.model.inputs import check_intrinsics, check_video
from recon.model.motion_encoder import PairMotionEncoder, motion_frame_size, motion_frames, motion_pool
from recon.model.pose_enc import fov_to_intrinsics, intrinsics_to_fov
from recon.model.readout import empty_pose_history, slot_frame_index, stream_pose_readout
from recon.model.revisit import RevisitInputs
from recon.model.state import StreamState
from recon.model.window_refine import contrast_depth, refine_window_poses, self_calibrate

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StreamReconModel(nn.Module):
    """Aggregator (frame / local spatiotemporal / memory blocks) + dense head + camera trunk +
    metric readout, the window refinement (flow fit, focal and depth-contrast self-calibration) and
    the stateful pose readout (scale smoothing, online motion averaging, revisit corrections).

    Outputs (``forward``; ``step`` returns the same keys without the T axis), float32; P is the
    number of pose slots, ``len(model.slot_offsets)``: the S = ``cfg.head.pose_slots`` window slots,
    then the ``cfg.head.long_pose_offsets``:

    - ``depth`` [B, T, H, W]: z-depth in metres, > 0 (unit-scale depth times ``metric_scale``).
    - ``depth_conf`` [B, T, H, W]: confidence, >= 1.
    - ``K`` [B, T, 3, 3]: intrinsics in pixels (OpenCV); the given ``K`` when passed in, else the
      predicted fov's, self-calibrated over the stream when ``cfg.head.refine`` is on
      (:mod:`recon.model.window_refine`).
    - ``cam2world`` [B, T, 4, 4]: camera-to-world, world = the first frame's camera (OpenCV axes);
      frame 0 is the identity; later frames from online motion averaging of the window poses.
    - ``window_cam2world`` [B, T, P, 4, 4]: slot k is frame t in the camera of frame ``t - d``,
      ``d = slot_offsets[k]`` (``inv(cam2world[t - d]) @ cam2world[t]`` for a perfect model),
      metres; slots of frames before 0 are predicted but unused.
    - ``metric_scale`` [B, T]: the smoothed scale s > 0 of depth and translation (metres per unit).
    - ``world_points`` [B, T, H, W, 3]: ``cam2world * unproject(depth, K)``, metres, world frame.
    - ``pose_enc`` [B, T, 9]: ``cam2world`` as translation (3), quaternion wxyz (4, w >= 0), then
      fov_h, fov_w (radians): the predicted ones, or those of the self-calibrated ``K``.

    Args:
        cfg: the architecture (see :class:`recon.model.config.ModelConfig`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.signature = cfg.signature()
        self.aggregator = Aggregator(cfg)
        head = cfg.head
        self.dense_head = DenseHead(cfg.dim, head.features, len(head.levels), cfg.patch_size,
                                    self.aggregator.embed.num_special, self.aggregator.embed.grid,
                                    head.depth_activation)
        self.slot_offsets = slot_offsets(head)
        self.camera_trunk = CameraTrunk(cfg.dim, len(self.slot_offsets), head.pose_tokens_per_slot,
                                        head.camera_trunk_depth, head.camera_hidden, cfg.num_heads)
        self.metric_readout = MetricReadout(cfg.dim, head.camera_hidden)
        self.motion_encoder = PairMotionEncoder(cfg.image_size, head.motion_width, cfg.dim)

    def set_refine(self, enabled: bool) -> None:
        """Turn the window-pose refinement (``cfg.head.refine.enabled``) on or off; like
        :meth:`set_revisit`, states made before the change no longer fit."""
        self.cfg.head.refine.enabled = bool(enabled)
        self.signature = self.cfg.signature()

    def set_revisit(self, enabled: bool) -> None:
        """Turn the revisit corrections (``cfg.head.revisit.enabled``) on or off; states made
        before the change no longer fit (the architecture signature changes with it)."""
        self.cfg.head.revisit.enabled = bool(enabled)
        self.signature = self.cfg.signature()

    @property
    def pose_slots(self) -> int:
        """S, the earlier frames of the window each frame predicts its relative pose to (the long
        slots come after them, see :attr:`slot_offsets`)."""
        return self.cfg.head.pose_slots

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> StreamState:
        """The state before the first frame of ``batch_size`` sequences."""
        device = device if device is not None else next(self.parameters()).device
        windows, memory = self.aggregator.init_caches(batch_size, device)
        revisit = self.cfg.head.revisit
        poses = empty_pose_history(batch_size, self.pose_slots, device,
                                   (1, *motion_frame_size(self.cfg.image_size)),
                                   revisit.keyframes if revisit.enabled else 0, max(self.slot_offsets))
        return StreamState(0, batch_size, windows, memory, poses, self.signature)

    def forward(self, video: torch.Tensor, K: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Whole clip in parallel: video [B, T, 3, H, W] RGB in [0, 1]; K [B, 3, 3] or [B, T, 3, 3]."""
        check_video(video, self.cfg.image_size, "video")
        out, _ = self.run(video, self.init_state(video.shape[0], video.device), K)
        return out

    def step(self, frames: torch.Tensor, state: StreamState, K: torch.Tensor | None = None
             ) -> tuple[dict[str, torch.Tensor], StreamState]:
        """One streamed frame: frames [B, 3, H, W] RGB in [0, 1], K [B, 3, 3] -> (outputs, new state)."""
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4:
            got = list(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ShapeError(f"frames: expected a tensor [B, 3, H, W], got {got}")
        if K is not None and isinstance(K, torch.Tensor) and K.dim() == 3:
            K = K.unsqueeze(1)
        out, state = self.run(frames.unsqueeze(1), state, K, name="frames")
        return {k: v[:, 0] for k, v in out.items()}, state

    def run(self, video: torch.Tensor, state: StreamState, K: torch.Tensor | None = None,
            name: str = "video", dense_frames: torch.Tensor | None = None, revisit: bool = True,
            refine: bool = True) -> tuple[dict[str, torch.Tensor], StreamState]:
        """T frames that follow ``state`` (the one implementation behind forward and step).

        Also the entry point for truncated backpropagation: carry the returned state into the
        next segment (``recon.model.state.detach_state`` cuts the gradient).

        Args:
            video: [B, T, 3, H, W] RGB in [0, 1].
            state: the state before ``video[:, 0]``.
            K: optional known intrinsics [B, 3, 3] or [B, T, 3, 3].
            name: argument name for error messages.
            dense_frames: training only: sorted indices [T'] into the T frames; the dense head runs
                on those frames alone, so ``depth``, ``depth_conf`` and ``world_points`` have T'
                frames and ``dense_frames`` is returned too. Poses, scale and the state are the
                same as without it.
            revisit: correct poses at revisited places (:mod:`recon.model.revisit`) when
                ``cfg.head.revisit.enabled``; needs every frame's depth, so it is off with
                ``dense_frames``. Training runs without it (``recon.train.tbptt``): it learns
                the window poses the correction starts from.
            refine: refine the window poses against the pair flow
                (:mod:`recon.model.window_refine`) when ``cfg.head.refine.enabled``; also needs
                every frame's depth (off with ``dense_frames``), and training runs without it.
        """
        B, T, _, H, W = check_video(video, self.cfg.image_size, name)
        if not isinstance(state, StreamState):
            raise ShapeError(
                f"state: expected a StreamState from model.init_state, got {type(state).__name__}")
        state.check(self.signature, B)
        K_in = check_intrinsics(K, B, T, "K")
        use_amp = video.device.type == "cuda" and self.cfg.autocast in _AUTOCAST
        amp = (torch.autocast("cuda", dtype=_AUTOCAST[self.cfg.autocast]) if use_amp
               else contextlib.nullcontext())
        with amp:
            levels, final, windows, memory = self.aggregator(
                video, state.frame_index, state.windows, state.memory)
        with torch.autocast(video.device.type, enabled=False):
            embed, S, P = self.aggregator.embed, self.pose_slots, len(self.slot_offsets)
            dense = slice(None) if dense_frames is None else dense_frames
            images = (video.float() - embed.mean) / embed.std                              # [B, T, 3, H, W]
            unit_depth, conf = self.dense_head([x[:, dense].flatten(0, 1).float() for x in levels],
                                               images[:, dense].flatten(0, 1))
            final = final.float()
            motion, flow, history, current = self._pair_motion(images, state.poses.frames)
            trans, quat, fov = self.camera_trunk(final[:, :, :embed.num_pose].flatten(0, 1), motion)
            raw_log_scale = self.metric_readout(final[:, :, embed.metric_index].flatten(0, 1)).view(B, T)
            fov = fov.view(B, T, 2)
            K_out = K_in if K_in is not None else fov_to_intrinsics(fov[..., 0], fov[..., 1], H, W)
            Td = unit_depth.shape[0] // B
            calibration = (state.poses.calib_info, state.poses.calib_vector)
            fit_depth = unit_depth      # the depth the geometric fits use (contrast-calibrated)
            if refine and dense_frames is None and self.cfg.head.refine.enabled:
                settings, size = self.cfg.head.refine, current.shape[-2:]
                pool = motion_pool(self.cfg.image_size)
                if settings.calibrate and (K_in is None or settings.calibrate_contrast):
                    K_out, log_contrast, *calibration = self_calibrate(
                        flow, size, unit_depth, K_out, trans[:, :S], quat[:, :S], pool, *calibration,
                        state.frame_index, settings, fit_focal=K_in is None)
                    if K_in is None:
                        fov = torch.stack(intrinsics_to_fov(K_out, H, W), -1)
                    if settings.calibrate_contrast:
                        fit_depth = contrast_depth(unit_depth.detach(), log_contrast.flatten())
                # the geometric refinement works on the S window slots (the pairs with flow)
                window_trans, window_quat, _ = refine_window_poses(
                    flow, size, fit_depth, K_out.flatten(0, 1), trans[:, :S], quat[:, :S], pool, settings)
                trans = window_trans if P == S else torch.cat((window_trans, trans[:, S:]), 1)
                quat = window_quat if P == S else torch.cat((window_quat, quat[:, S:]), 1)
            revisit_inputs = None
            if revisit and dense_frames is None and self.cfg.head.revisit.enabled:
                revisit_inputs = RevisitInputs(current, fit_depth.view(B, T, H, W), K_out,
                                               motion_pool(self.cfg.image_size), self.cfg.head.revisit)
            cam2world, scale, window, poses = stream_pose_readout(
                raw_log_scale, trans.view(B, T, P, 3), quat.view(B, T, P, 4), state.poses,
                state.frame_index, self.cfg.head.scale_ema, revisit_inputs, self.slot_offsets)
            depth = unit_depth.view(B, Td, H, W) * scale[:, dense, None, None]
            conf = conf.view(B, Td, H, W)
            points = unproject_depth(depth, K_out[:, dense])                            # [B, Td, H, W, 3]
            world = transform_points(cam2world[:, dense], points.view(B, Td, H * W, 3)).view(B, Td, H, W, 3)
            quat = rotmat_to_quat_wxyz(cam2world[..., :3, :3])
            pose_enc = torch.cat((cam2world[..., :3, 3], quat, fov), -1)
        out = {"depth": depth, "depth_conf": conf, "K": K_out, "cam2world": cam2world,
               "window_cam2world": window, "metric_scale": scale, "world_points": world,
               "pose_enc": pose_enc}
        if dense_frames is not None:
            out["dense_frames"] = dense_frames
        poses = dataclasses.replace(poses, frames=history, calib_info=calibration[0],
                                    calib_vector=calibration[1])
        new_state = StreamState(state.frame_index + T, B, windows, memory, poses, self.signature,
                                dict(state.meta))
        return out, new_state


    def _pair_motion(self, images: torch.Tensor, history: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pair-motion features of every (frame t, frame t - j) of the call, and the new frame history.

        Args:
            images: [B, T, 3, H, W] ImageNet-normalised frames, float32.
            history: [B, S, 1, h, w] motion frames of the S frames before ``video`` (newest first).

        Returns:
            (motion [B * T, S, C], the pairs' Lucas-Kanade output [B * T * S, 2 + L, gh, gw],
             history after the last frame [B, S, 1, h, w] (newest first), the T current motion
             frames [B, T, 1, h, w]).
        """
        B, T = images.shape[:2]
        S = history.shape[1]
        current = motion_frames(images.flatten(0, 1), motion_pool(self.cfg.image_size))
        frames = torch.cat((history.flip(1), current.view(B, T, *current.shape[1:])), dim=1)  # oldest first
        index = slot_frame_index(T, S, S, images.device)
        earlier = frames[:, index]                                                       # [B, T, S, 1, h, w]
        now = frames[:, S:].unsqueeze(2).expand_as(earlier)
        flow = self.motion_encoder.flow(now.flatten(0, 2), earlier.flatten(0, 2))
        motion = self.motion_encoder.features(flow).view(B * T, S, -1)
        return motion, flow, frames[:, -S:].flip(1), frames[:, S:]


def build_model(cfg: ModelConfig | str | dict) -> StreamReconModel:
    """A model from a ModelConfig, a preset name (``"tiny"``), a YAML path or a dict."""
    from recon.model.config import load_model_config

    return StreamReconModel(load_model_config(cfg))
