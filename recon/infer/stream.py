"""The one streaming loop: fitted frames in, one ``model.step`` per frame, typed predictions out.

``recon run`` / ``recon demo`` (``recon.infer.runner.StreamRunner``), ``recon eval``
(``recon.eval.drift.stream_records``) and the streaming benchmarks all drive the model through
:class:`StreamSession`. The model owns precision: ``StreamReconModel.run`` applies its config's
``autocast`` on CUDA, so nothing here wraps the step in autocast.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch

from recon.infer.allocator import pin_malloc_thresholds
from recon.infer.frames import FramePrediction, SourceFrame


class StreamSession:
    """One stream through a model: the fixed-size state and a step per frame.

    Args:
        model: a streamrecon model in eval mode (``init_state``, ``step``).
        device: the model's device.

    Attributes:
        state: the stream state after the last frame (``model.init_state(1)`` before the first).
    """

    def __init__(self, model, device: torch.device | str = "cpu"):
        pin_malloc_thresholds()                # flat RSS on long CPU streams (recon.infer.allocator)
        self.model = model
        self.device = torch.device(device)
        self.state = model.init_state(1, device=self.device)

    def _inputs(self, frame: SourceFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.from_numpy(frame.image).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
        K = None if frame.K is None else torch.as_tensor(frame.K, dtype=torch.float32)[None].to(self.device)
        return x, K

    def step(self, frame: SourceFrame) -> FramePrediction:
        """Run the model on one frame; the state moves on."""
        t0, c0 = time.perf_counter(), time.thread_time()
        with torch.inference_mode():
            x, K = self._inputs(frame)
            out, self.state = self.model.step(x, self.state, K=K)
            host = {key: out[key][0].float().cpu().numpy()
                    for key in ("depth", "depth_conf", "K", "cam2world", "world_points")}
        latency_ms = (time.perf_counter() - t0) * 1000.0
        cpu_ms = (time.thread_time() - c0) * 1000.0
        return FramePrediction(
            frame=frame, depth=host["depth"], conf=host["depth_conf"], K=host["K"],
            cam2world=host["cam2world"], world_points=host["world_points"], latency_ms=latency_ms,
            cpu_ms=cpu_ms, pose_fallbacks=int(self.state.poses.fallbacks.sum()),
            revisit_corrections=int(self.state.poses.keyframes.corrections.sum()),
        )

    def run(self, frames: Iterable[SourceFrame]) -> Iterator[FramePrediction]:
        """Predictions for ``frames``, in order, one step each."""
        for frame in frames:
            yield self.step(frame)
