"""The streaming reconstruction model: ``build_model(cfg)``, its config and its streaming state.

Example:
    >>> import torch
    >>> from recon.model import build_model
    >>> model = build_model("tiny").eval()
    >>> out = model(torch.rand(1, 4, 3, 96, 128))            # parallel over a clip
    >>> state = model.init_state(1)
    >>> out0, state = model.step(torch.rand(1, 3, 96, 128), state)   # streaming
"""

from recon.model.config import HeadConfig, MemoryConfig, ModelConfig, load_model_config
from recon.model.model import StreamReconModel, build_model
from recon.model.state import KVWindow, StreamState, detach_state, tensor_bytes

__all__ = [
    "HeadConfig", "KVWindow", "MemoryConfig", "ModelConfig", "StreamReconModel", "StreamState",
    "build_model", "detach_state", "load_model_config", "tensor_bytes",
]
