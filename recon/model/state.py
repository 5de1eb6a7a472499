"""The explicit streaming state of :class:`recon.model.model.StreamReconModel`.

``state = model.init_state(B)`` then ``out, state = model.step(frames, state)`` per frame. The state
holds everything the model remembers about the past:

- ``frame_index``: how many frames this state has seen (the next frame's index; 0 = first frame);
- ``windows``: one :class:`KVWindow` per aggregator block, the keys and values of the last ``W - 1``
  frames for local spatiotemporal attention (fixed size: a sliding window, oldest frame first);
- ``memory``: one cache per memory layer, in the layer's own dataclass (fixed size for every type
  but ``causal_attention``, whose key/value cache grows by one frame per step);
- ``poses``: the pose readout's :class:`PoseHistory` (the fixed absolute poses of the last
  ``max(slot_offsets)`` frames for online motion averaging, the smoothed metric log-scale, the
  count of fusion fallbacks, and a fixed-size bank of keyframes for pose corrections at revisits);
- ``signature``: a hash of the model's architecture config, so a state made by another model is
  rejected with :class:`recon.errors.ShapeError` instead of failing deep inside a layer.

All states are batched: every sequence of the batch is at the same ``frame_index``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from recon.errors import ShapeError


@dataclass
class KVWindow:
    """Keys and values of the previous ``W - 1`` frames of one local-attention block.

    Attributes:
        k: [B, W-1, heads, N, head_dim] keys, spatially rotated (RoPE), not yet rotated in time.
        v: [B, W-1, heads, N, head_dim] values.

    Slot ``j`` holds frame ``frame_index - (W - 1) + j``; slots of frames before 0 are zeros and
    masked out by the attention.
    """

    k: torch.Tensor
    v: torch.Tensor


@dataclass
class KeyframeBank:
    """Earlier keyframes the pose readout corrects the current pose against at revisits
    (:mod:`recon.model.revisit`); fixed size K (K = 0 when revisits are off).

    Attributes:
        frames: [B, K, 1, h, w] float32 grey motion frames of the keyframes.
        thumbnails: [B, K, D] float32 zero-mean unit-norm thumbnails (retrieval by correlation).
        cam2world: [B, K, 4, 4] float32 their fixed poses (world = the first camera).
        index: [B, K] int64 frame index of each keyframe, -1 for an empty slot.
        used: [B, K] int64 last frame that inserted or matched the keyframe (replacement: the
            least recently used slot goes first).
        corrections: [B] int64 frames whose pose was corrected against a keyframe (measured or
            held).
        held: [B, 4, 4] float32 world-frame correction still to apply after the last measurement
            (``candidate @ inv(corrected pose)``; identity when none).
        held_valid: [B] bool ``held`` applies to the frames until the next measurement.
    """

    frames: torch.Tensor
    thumbnails: torch.Tensor
    cam2world: torch.Tensor
    index: torch.Tensor
    used: torch.Tensor
    corrections: torch.Tensor
    held: torch.Tensor
    held_valid: torch.Tensor


@dataclass
class PoseHistory:
    """What the pose readout carries: fixed absolute poses of the last D frames and the scale.

    Attributes:
        cam2world: [B, D, 4, 4] float32 camera-to-world (world = the first camera, OpenCV axes) of
            frames ``frame_index - 1 .. frame_index - D`` (newest first); identity for frames < 0.
            D is the farthest slot offset (S, the window slots, when there are no long slots).
        log_scale: [B] float32 smoothed metric log-scale after the last frame (0 before frame 0).
        fallbacks: [B] int64, frames whose pose fell back to the previous pose because no
            relative estimate of the window was finite.
        frames: [B, S, 1, h, w] float32 grey motion frames of the pair motion encoder
            (:func:`recon.model.motion_encoder.motion_frames`) of the S window slots, newest
            first; zeros for frames < 0.
        keyframes: the revisit keyframe bank.
        calib_info: [B, 2, 2] float32 the self-calibration's information filter of (log focal
            length in pixels, log depth contrast), :func:`recon.model.window_refine.self_calibrate`
            (zeros before any evidence) ...
        calib_vector: [B, 2] float32 ... and its information vector.
    """

    cam2world: torch.Tensor
    log_scale: torch.Tensor
    fallbacks: torch.Tensor
    frames: torch.Tensor
    keyframes: KeyframeBank
    calib_info: torch.Tensor
    calib_vector: torch.Tensor


@dataclass
class StreamState:
    """Everything a streaming model carries from one frame to the next.

    Attributes:
        frame_index: number of frames seen so far (index of the next frame).
        batch_size: B of the sequences this state belongs to.
        windows: per aggregator block, the local-attention key/value window.
        memory: per memory layer (in depth order), that layer's cache object.
        poses: the pose readout's history (motion averaging, metric scale).
        signature: architecture hash of the model that created the state.
    """

    frame_index: int
    batch_size: int
    windows: list[KVWindow]
    memory: list[Any]
    poses: PoseHistory
    signature: str
    meta: dict = field(default_factory=dict)

    def nbytes(self) -> int:
        """Total bytes of all tensors in the state."""
        return tensor_bytes(self)

    def check(self, signature: str, batch_size: int, name: str = "state") -> None:
        """Raise ShapeError unless this state belongs to a model with ``signature`` and batch B.

        Args:
            signature: the model's architecture hash.
            batch_size: batch size of the frames about to be processed.
            name: argument name for the message.
        """
        if self.signature != signature:
            raise ShapeError(
                f"{name}: this state was created by a model with architecture {self.signature}, "
                f"but this model is {signature}; create a new one with model.init_state(B)"
            )
        if self.batch_size != batch_size:
            raise ShapeError(
                f"{name}: state holds {self.batch_size} sequence(s) but the frames have batch size "
                f"{batch_size}"
            )


def state_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor reachable in (nested) dataclasses / lists / tuples / dicts, in field order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in state_tensors(getattr(obj, f.name))]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in state_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in state_tensors(v)]
    return []


def tensor_bytes(obj: Any) -> int:
    """Sum of ``numel * element_size`` over every tensor reachable in dataclasses/lists/dicts/tuples."""
    return sum(t.numel() * t.element_size() for t in state_tensors(obj))


def memory_state_norm(state: StreamState) -> float:
    """The largest Frobenius norm (in float32) over the tensors of the memory layers' caches.

    The quantity the bounded-state checks follow over a long stream; 0.0 for a model without
    memory layers, NaN or inf when a cache holds a non-finite value.
    """
    return max((t.float().norm().item() for t in state_tensors(state.memory)), default=0.0)


def norm_growth(norms: list[float]) -> float:
    """``max(norms[n/2:]) / max(norms[n/10 : n/2])``: how much a state norm grew after its start.

    About 1 for a state that settles; it keeps growing with the stream for an unbounded one. NaN
    when fewer than 4 samples or the early part is zero (no memory, or nothing written yet).
    """
    n = len(norms)
    if n < 4:
        return float("nan")
    early, late = max(norms[n // 10 : n // 2]), max(norms[n // 2 :])
    return late / early if early > 0 else float("nan")


def detach_state(obj: Any) -> Any:
    """A copy of a state (or any nested cache) with every tensor detached from the autograd graph.

    Used for truncated backpropagation through long videos: carry the state, cut the gradient.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj, **{f.name: detach_state(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        )
    if isinstance(obj, dict):
        return {k: detach_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [detach_state(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(detach_state(v) for v in obj)
    return obj
