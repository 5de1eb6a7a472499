"""The streaming loop: frames in, one ``model.step`` per frame, outputs out.

Frames come from a source (video file, image folder, webcam; see ``recon.infer.sources``), are
resized / cropped to the model resolution with the intrinsics adjusted (``recon.infer.preprocess``),
go through ``model.step(frame, state, K=...)`` with a fixed-size state, and every finished frame is
written (trajectory, intrinsics, point map, optional depth) and optionally logged to Rerun.

Ctrl-C / SIGTERM stop the loop at the next frame boundary: the outputs then hold every finished
frame and summary.json says "interrupted".
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import psutil
import torch

from recon.infer.outputs import RunOutputs
from recon.infer.rerun_logger import RerunLogger


@dataclass
class SourceFrame:
    """A frame as it leaves a source and the preprocessing: the model's input.

    Attributes:
        index: frame number in the source (after stride).
        timestamp: seconds.
        image: [H, W, 3] uint8 RGB at model resolution.
        K: [3, 3] known intrinsics at model resolution (pixels), or None to let the model predict.
        gt_depth: optional [H, W] ground-truth depth at model resolution (metres, 0 = invalid).
        gt_cam2world: optional [4, 4] ground-truth pose (dataset world, OpenCV camera).
    """

    index: int
    timestamp: float
    image: np.ndarray
    K: np.ndarray | None = None
    gt_depth: np.ndarray | None = None
    gt_cam2world: np.ndarray | None = None


@dataclass
class RunStats:
    """Timing and memory of a run (latencies in ms, one per frame)."""

    latencies_ms: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "frames": len(self.latencies_ms),
            "fps": float(1000.0 / lat.mean()) if self.latencies_ms else 0.0,
            "latency_ms_median": float(np.median(lat)),
            "latency_ms_p95": float(np.percentile(lat, 95)),
            "peak_rss_mb": float(max(self.rss_mb)) if self.rss_mb else 0.0,
        }


class _StopFlag:
    """SIGINT / SIGTERM set a flag checked between frames; a second signal stops at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: signals cannot be caught here
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class StreamRunner:
    """Runs a model over a frame source, one frame at a time, with constant memory.

    Args:
        model: a streamrecon model (``init_state``, ``step``), in eval mode.
        outputs: where finished frames are written.
        logger: optional Rerun logger.
        device: torch device of the model.
        settings: what to record in summary.json (source, options, checkpoint).
        scorer: optional ``recon.infer.scoring.GroundTruthScorer`` fed every frame.
    """

    def __init__(
        self,
        model,
        outputs: RunOutputs,
        logger: RerunLogger | None = None,
        device: torch.device | str = "cpu",
        settings: dict | None = None,
        scorer=None,
    ):
        self.model = model
        self.scorer = scorer
        self.outputs = outputs
        self.logger = logger
        self.device = torch.device(device)
        self.settings = settings or {}
        self.stats = RunStats()
        self._process = psutil.Process()
        self.pose_fallbacks = 0

    def _summary(self, status: str) -> dict:
        summary = {
            "status": status,
            **self.stats.summary(),
            "points": len(self.outputs.map),
            "pose_fallbacks": self.pose_fallbacks,
            "settings": self.settings,
        }
        if self.scorer is not None:
            summary["accuracy"] = self.scorer.result()
        return summary

    @torch.inference_mode()
    def _step(self, frame: SourceFrame, state):
        x = torch.from_numpy(frame.image).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
        K = (
            None
            if frame.K is None
            else torch.as_tensor(frame.K, dtype=torch.float32, device=self.device)[None]
        )
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            out, state = self.model.step(x, state, K=K)
        return {k: v[0].float().cpu().numpy() for k, v in out.items() if torch.is_tensor(v)}, state

    def run(self, frames: Iterable[SourceFrame], progress=None) -> dict:
        """Process every frame; returns the summary (also written to summary.json).

        Args:
            frames: the preprocessed frames, in order.
            progress: optional tqdm-like object with ``update(n)`` and ``set_postfix``.
        """
        state = self.model.init_state(1, device=self.device)
        status = "running"
        self.outputs.write_summary(self._summary(status))
        map_every = self.logger.options.map_every if self.logger else 0
        try:
            with _StopFlag() as stop:
                for frame in frames:
                    t0 = time.perf_counter()
                    out, state = self._step(frame, state)
                    latency = (time.perf_counter() - t0) * 1000.0
                    fallbacks = int(state.poses.fallbacks.sum())
                    if fallbacks > self.pose_fallbacks:
                        print(f"warning: frame {frame.index}: no finite relative pose in the window; "
                              f"kept the previous pose ({fallbacks} such frames so far)", file=sys.stderr)
                        self.pose_fallbacks = fallbacks
                    self.outputs.write_frame(
                        frame.index,
                        frame.timestamp,
                        frame.image,
                        out["depth"],
                        out["depth_conf"],
                        out["K"],
                        out["cam2world"],
                        out["world_points"],
                    )
                    if self.scorer is not None:
                        self.scorer.update(frame, out)
                    rss = self._process.memory_info().rss / 2**20
                    self.stats.latencies_ms.append(latency)
                    self.stats.rss_mb.append(rss)
                    self.outputs.timing.write(f"{frame.index} {latency:.3f} {rss:.1f}")
                    if self.logger is not None:
                        self.logger.log_frame(
                            frame.index,
                            frame.image,
                            out["depth"],
                            out["depth_conf"],
                            out["K"],
                            out["cam2world"],
                            out["world_points"],
                            {"fps": 1000.0 / latency, "latency_ms": latency, "rss_mb": rss},
                        )
                        if map_every and self.outputs.frames_written % map_every == 0:
                            cloud = self.outputs.map.cloud()
                            self.logger.log_map(
                                frame.index, cloud.point.positions.numpy(), cloud.point.colors.numpy()
                            )
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(fps=f"{1000.0 / latency:.1f}")
                    if stop.requested:
                        status = "interrupted"
                        break
                else:
                    status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
        except BaseException:
            status = "failed"
            raise
        finally:
            points = self.outputs.close()
            if self.logger is not None:
                if points:
                    cloud = self.outputs.map.cloud()
                    self.logger.log_map(
                        max(self.outputs.frames_written - 1, 0),
                        cloud.point.positions.numpy(),
                        cloud.point.colors.numpy(),
                    )
                self.logger.close()
            summary = self._summary(status)
            self.outputs.write_summary(summary)
        return summary


def settings_dict(obj) -> dict:
    """A JSON-friendly view of a dataclass of options."""
    return {
        k: (str(v) if not isinstance(v, (int, float, str, bool, type(None), list, dict)) else v)
        for k, v in asdict(obj).items()
    }
