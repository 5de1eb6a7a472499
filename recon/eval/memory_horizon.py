"""How far back does a trained model use its memory? Stream it with the memory cut to a horizon.

:class:`MemoryHorizon` wraps a streaming model (``init_state`` / ``step``) so that its long-range
memory layers are emptied every ``horizon`` frames: before frame t with ``t % horizon == 0``
(t > 0), ``state.memory`` is replaced by the layers' initial caches. At frame t the memory has
then seen only frames ``horizon * floor(t / horizon) .. t - 1`` (between 0 and ``horizon - 1``
earlier frames). Everything else the state carries is kept: the local-attention windows
(the last W - 1 frames), the pose readout's history, metric scale and keyframe bank. So

- ``horizon = 1``: no earlier frame reaches the memory layers (each still mixes the tokens of the
  current frame); the model's own cross-frame context is the local window alone;
- ``horizon = 48`` (the shipped recipe's clip length): the memory never holds more frames than
  training showed it.

Paired with the same model streamed without a horizon (``recon eval --memory-horizon N`` against
plain ``recon eval``, ``python -m tools.ablation_stats --pair``), the difference is what the
memory's older content contributes. It is a diagnostic: the streamed poses and depths with a
horizon are not what ``recon run`` produces. A model without memory layers is unchanged by it.
"""

from __future__ import annotations

import dataclasses

import torch

from recon.errors import InputError
from recon.model.state import StreamState


class MemoryHorizon:
    """A streaming model whose memory layers forget everything older than the last reset.

    Args:
        model: a :class:`recon.model.model.StreamReconModel` (its ``aggregator.init_caches``
            supplies the empty memory).
        horizon: frames between resets (>= 1).

    Attributes:
        cfg: the wrapped model's config (what :class:`recon.infer.stream.StreamSession` and the
            frame fitting read).
        resets: memory resets done so far, over every stream.
    """

    def __init__(self, model, horizon: int) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise InputError(f"--memory-horizon: expected a frame count >= 1, got {horizon!r}")
        self.model, self.horizon, self.resets = model, horizon, 0

    @property
    def cfg(self):
        return self.model.cfg

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> StreamState:
        return self.model.init_state(batch_size, device)

    def step(self, frames: torch.Tensor, state: StreamState, K: torch.Tensor | None = None
             ) -> tuple[dict[str, torch.Tensor], StreamState]:
        """``model.step`` on one frame [B, 3, H, W], the memory emptied first at a multiple of
        ``horizon``."""
        if state.frame_index > 0 and state.frame_index % self.horizon == 0:
            _, memory = self.model.aggregator.init_caches(state.batch_size, frames.device)
            state = dataclasses.replace(state, memory=memory)
            self.resets += 1
        return self.model.step(frames, state, K)
