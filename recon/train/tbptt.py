"""Truncated backpropagation through long clips: the streaming state carried across clip segments.

A clip of T frames is cut into segments of ``segment_length`` frames. The model runs them in order
through :meth:`recon.model.StreamReconModel.run`, carrying its :class:`recon.model.StreamState`
(local-attention windows + long-range memory) from one segment to the next, so every frame sees
the whole past exactly as in streaming. Segments are grouped by ``backprop_segments`` (K): the
losses of a group are summed and backpropagated once, so the gradient of a segment's loss flows
through the state into at most the K - 1 segments before it in its group, and the graph of at most
K segments is held in memory at once. Between groups the state is detached (its values carry on,
its gradient stops). Gradients of all groups accumulate into one optimizer step per clip.

With ``segment_length = 0`` (or >= T) the clip is one segment: ordinary full backpropagation.

Each segment's loss is weighted by its share of the clip's frames, so the reported loss is the
frame-weighted mean over the clip whatever the segmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from recon.errors import ConfigError
from recon.model.state import detach_state

_FRAME_KEYS = ("video", "depth", "K", "cam2world", "mask", "frame_ids")


@dataclass
class TBPTTConfig:
    """Segmenting of long training clips.

    Attributes:
        segment_length: frames per segment; 0 = the whole clip in one segment.
        backprop_segments: K, the number of consecutive segments one backward pass spans.
    """

    segment_length: int = 0
    backprop_segments: int = 1

    def validate(self) -> TBPTTConfig:
        if self.segment_length < 0 or self.backprop_segments < 1:
            raise ConfigError(
                f"model.tbptt: expected segment_length >= 0 and backprop_segments >= 1, got "
                f"{self.segment_length}, {self.backprop_segments}"
            )
        return self


def segment_bounds(num_frames: int, segment_length: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering 0..num_frames in order (the last segment may be shorter)."""
    if segment_length <= 0 or segment_length >= num_frames:
        return [(0, num_frames)]
    return [(s, min(s + segment_length, num_frames)) for s in range(0, num_frames, segment_length)]


def slice_frames(batch: dict, start: int, stop: int) -> dict:
    """The batch restricted to frames [start, stop) (per-frame tensors sliced on axis 1)."""
    return {
        k: (v[:, start:stop] if k in _FRAME_KEYS and isinstance(v, torch.Tensor) else v)
        for k, v in batch.items()
    }


def run_segments(
    net: torch.nn.Module,
    batch: dict,
    cfg: TBPTTConfig,
    loss_fn: Callable[[dict, dict, torch.Tensor | None], dict[str, torch.Tensor]],
    backward: Callable[[torch.Tensor], None] | None = None,
    intrinsics: bool = False,
    keep_outputs: bool = False,
    dense_every: int = 1,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Run a clip segment by segment with the state carried over; optionally backpropagate.

    Args:
        net: a :class:`recon.model.StreamReconModel`.
        batch: clip batch (``video`` [B, T, 3, H, W], ``depth``, ``K``, ``cam2world`` [B, T, 4, 4], ...).
        cfg: segmenting.
        loss_fn: ``loss_fn(outputs, segment_batch, first_cam2world)`` -> dict with ``loss`` (scalar);
            ``first_cam2world`` is None for the first segment and the clip's frame-0 pose [B, 4, 4]
            for later ones (the model's world stays the clip's first camera). ``segment_batch``
            also holds ``previous_cam2world`` [B, P, 4, 4], the poses of the up to ``max(offsets)``
            frames before the segment (so slot pairs across a segment boundary are trained), and
            ``slot_offsets``, the model's :attr:`slot_offsets`.
        backward: called once per group of K segments on the group's summed loss (e.g.
            ``LightningModule.manual_backward``); None = no backpropagation (evaluation).
        intrinsics: pass the batch's ``K`` to the model instead of letting it predict intrinsics.
        keep_outputs: also return the model outputs of the whole clip (detached, concatenated on T).
        dense_every: run the dense head (and its losses) only on clip frames ``0, k, 2k, ...``
            (``k = dense_every``; 1 = every frame), a training-throughput option; poses and the
            state are unaffected. Not combinable with ``keep_outputs``.

    Returns:
        (frame-weighted mean of every loss term over the clip, detached; outputs or None). A group
        whose loss is not finite is not backpropagated; the returned ``loss`` is then not finite.
    """
    if dense_every < 1 or (dense_every > 1 and keep_outputs):
        raise ValueError(f"dense_every: expected >= 1 (and 1 with keep_outputs), got {dense_every}")
    B, T = batch["video"].shape[:2]
    bounds = segment_bounds(T, cfg.segment_length)
    state = net.init_state(B, device=batch["video"].device)
    reach = max(net.slot_offsets)
    first_pose = batch["cam2world"][:, 0]
    totals: dict[str, torch.Tensor] = {}
    outputs: list[dict[str, torch.Tensor]] = []
    group_loss = None
    for index, (start, stop) in enumerate(bounds):
        seg = slice_frames(batch, start, stop)
        seg["previous_cam2world"] = batch["cam2world"][:, max(0, start - reach):start]
        seg["slot_offsets"] = net.slot_offsets
        dense = None
        if dense_every > 1:
            dense = torch.arange(-start % dense_every, stop - start, dense_every, device=seg["video"].device)
        out, state = net.run(seg["video"], state, seg["K"] if intrinsics else None, dense_frames=dense,
                             revisit=False, refine=False)
        terms = loss_fn(out, seg, None if start == 0 else first_pose)
        weight = (stop - start) / T
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + weight * value.detach()
        group_loss = (
            weight * terms["loss"] if group_loss is None else group_loss + weight * terms["loss"]
        )
        if keep_outputs:
            outputs.append({k: v.detach() for k, v in out.items()})
        end_of_group = (index + 1) % cfg.backprop_segments == 0 or index == len(bounds) - 1
        if end_of_group:
            if backward is not None and torch.isfinite(group_loss.detach()):
                backward(group_loss)
            group_loss = None
            state = detach_state(state)
    merged = {k: torch.cat([o[k] for o in outputs], dim=1) for k in outputs[0]} if keep_outputs else None
    return totals, merged
