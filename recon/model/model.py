"""StreamReconModel: video -> per-frame depth, confidence, intrinsics, pose and world points."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from recon.errors import ShapeError
from recon.geometry import transform_points, unproject_depth
from recon.model.aggregator import Aggregator
from recon.model.config import ModelConfig
from recon.model.heads import CameraHead, DenseHead
from recon.model.inputs import check_intrinsics, check_video
from recon.model.pose_enc import IDENTITY_POSE7, fov_to_intrinsics, pose_enc_to_cam2world
from recon.model.state import StreamState

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StreamReconModel(nn.Module):
    """Aggregator (frame / local spatiotemporal / memory blocks) + dense head + camera head.

    Outputs (``forward``; ``step`` returns the same keys without the T axis), float32:

    - ``depth`` [B, T, H, W]: z-depth in metres, > 0.
    - ``depth_conf`` [B, T, H, W]: confidence, >= 1.
    - ``K`` [B, T, 3, 3]: intrinsics in pixels (OpenCV); the given ``K`` when passed in.
    - ``cam2world`` [B, T, 4, 4]: camera-to-world, world = the first frame's camera (OpenCV axes);
      frame 0 is the identity by construction.
    - ``world_points`` [B, T, H, W, 3]: ``cam2world * unproject(depth, K)``, metres, world frame.
    - ``pose_enc`` [B, T, 9]: the camera head's prediction: translation (3), quaternion wxyz (4),
      fov_h, fov_w (radians); frame 0's pose part is the identity.

    Args:
        cfg: the architecture (see :class:`recon.model.config.ModelConfig`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.signature = cfg.signature()
        self.aggregator = Aggregator(cfg)
        self.dense_head = DenseHead(cfg.dim, cfg.head.features, len(cfg.head.levels), cfg.patch_size,
                                    self.aggregator.embed.num_special, self.aggregator.embed.grid,
                                    cfg.head.depth_activation)
        self.camera_head = CameraHead(cfg.dim, cfg.head.camera_hidden)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> StreamState:
        """The state before the first frame of ``batch_size`` sequences."""
        device = device if device is not None else next(self.parameters()).device
        windows, memory = self.aggregator.init_caches(batch_size, device)
        return StreamState(0, batch_size, windows, memory, self.signature)

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
            name: str = "video") -> tuple[dict[str, torch.Tensor], StreamState]:
        """T frames that follow ``state`` (the one implementation behind forward and step).

        Also the entry point for truncated backpropagation: carry the returned state into the
        next segment (``recon.model.state.detach_state`` cuts the gradient).
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
            images = (video.flatten(0, 1).float() - self.aggregator.embed.mean) / self.aggregator.embed.std
            depth, conf = self.dense_head([x.flatten(0, 1).float() for x in levels],
                                          final.flatten(0, 1).float(), images)
            pose_enc = self.camera_head(final[:, :, 0].flatten(0, 1).float()).view(B, T, 9)
            is_first = (state.frame_index + torch.arange(T, device=video.device) == 0).view(1, T, 1)
            pose7 = torch.where(is_first, pose_enc.new_tensor(IDENTITY_POSE7), pose_enc[..., :7])
            pose_enc = torch.cat((pose7, pose_enc[..., 7:]), dim=-1)
            K_out = K_in if K_in is not None else fov_to_intrinsics(pose_enc[..., 7], pose_enc[..., 8], H, W)
            cam2world = pose_enc_to_cam2world(pose_enc)
            depth, conf = depth.view(B, T, H, W), conf.view(B, T, H, W)
            points = unproject_depth(depth, K_out)                                      # [B, T, H, W, 3]
            world = transform_points(cam2world, points.view(B, T, H * W, 3)).view(B, T, H, W, 3)
        out = {"depth": depth, "depth_conf": conf, "K": K_out, "cam2world": cam2world,
               "world_points": world, "pose_enc": pose_enc}
        new_state = StreamState(state.frame_index + T, B, windows, memory, self.signature, dict(state.meta))
        return out, new_state


def build_model(cfg: ModelConfig | str | dict) -> StreamReconModel:
    """A model from a ModelConfig, a preset name (``"tiny"``), a YAML path or a dict."""
    from recon.model.config import load_model_config

    return StreamReconModel(load_model_config(cfg))
