"""The protocol every memory layer follows, and the registry the model builds them from.

A memory layer maps a clip of frames, each a set of P tokens, to the same shape:

    y, cache = layer(x, cache=None)       x, y: [B, T, P, C] (T frames of P tokens, width C)

``cache`` is the layer's explicit streaming state (a dataclass of tensors, fixed size for every
layer but the causal-attention baseline). ``cache=None`` starts from the initial state. The
returned cache is the state after the last frame, so

    y_full, _ = layer(x)                                     # parallel over the clip (training)
    c = layer.init_cache(B, device)
    for t in range(T): y_t, c = layer(x[:, t:t+1], c)        # streaming, one frame at a time

compute the same function (fp32, to ~1e-5), and a clip can be split anywhere into segments that
carry the cache (truncated backpropagation through long videos). Memory states are float32
regardless of autocast. A frame is the "chunk" of the TTT/elastic layers (one update per frame).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class MemoryLayer(Protocol):
    """Structural type of a memory layer (an ``nn.Module`` with these two methods)."""

    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The state before the first frame, for ``batch_size`` sequences."""
        ...

    def __call__(self, x: torch.Tensor, cache: Any = None) -> tuple[torch.Tensor, Any]:
        """x: [B, T, P, C] -> (y: [B, T, P, C], cache after frame T-1)."""
        ...
