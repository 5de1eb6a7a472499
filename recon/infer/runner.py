"""A `recon run` over frames: the stream loop's predictions written out, logged and scored.

Frames come from a source (video file, image folder, webcam; see ``recon.infer.sources``), fitted
to the model resolution with the intrinsics adjusted (``data.fit.FrameFit``), go through the one
stream loop (``recon.infer.stream.StreamSession``: one ``model.step`` per frame, fixed-size state), and
every finished frame's :class:`~recon.infer.frames.FramePrediction` is written (trajectory,
intrinsics, point map, optional depth), optionally logged to Rerun and scored.

Ctrl-C / SIGTERM stop the loop at the next frame boundary: the outputs then hold every finished
frame and summary.json says "interrupted". summary.json is also rewritten while frames finish (at
most every ``summary_every_s`` seconds and whenever map.ply is rewritten), so a killed run leaves a
summary that counts its frames (its "running" then reads as "interrupted":
``recon.infer.outputs.read_summary``).

Frames whose image has no usable texture (:func:`textureless`: a blank, black or flat frame) still
go through the model and get a trajectory line, but are kept out of the map, with a warning; their
count is ``blank_frames`` in the summary. A frame whose ground truth cannot be read (``gt_problem``)
is kept without that ground truth (not scored against it), also with a warning
(``ground_truth_failures``).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch

from recon.infer.frames import SourceFrame
from recon.infer.outputs import RunOutputs
from recon.infer.rerun_logger import RerunLogger
from recon.infer.stream import StreamSession

# A frame whose every channel varies by less than this (standard deviation over the pixels, 0..255)
# carries no texture to reconstruct: a black, blank or flat frame.
MIN_TEXTURE_STD = 2.0


def texture_std(image: np.ndarray) -> float:
    """The largest per-channel standard deviation of an [H, W, 3] uint8 image (0..255)."""
    pixels = np.asarray(image, dtype=np.float32).reshape(-1, image.shape[-1] if image.ndim == 3 else 1)
    return float(pixels.std(axis=0).max()) if pixels.size else 0.0


def textureless(image: np.ndarray, min_std: float = MIN_TEXTURE_STD) -> bool:
    """True for a frame with no usable texture (every channel's std below ``min_std``)."""
    return texture_std(image) < min_std


def _report_due(count: int) -> bool:
    """Warn at the 1st, 2nd, 3rd, then every 100th occurrence (a long blank stretch is not a flood)."""
    return count <= 3 or count % 100 == 0


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
        scorer: optional ``recon.eval.scoring.GroundTruthScorer`` fed every frame.
        summary_every_s: rewrite summary.json at most this often while running (and with each map).
    """

    def __init__(
        self,
        model,
        outputs: RunOutputs,
        logger: RerunLogger | None = None,
        device: torch.device | str = "cpu",
        settings: dict | None = None,
        scorer=None,
        summary_every_s: float = 1.0,
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
        self.revisit_corrections = 0
        self.blank_frames = 0
        self.ground_truth_failures = 0
        self.summary_every_s = summary_every_s

    def _summary(self, status: str, final: bool = True) -> dict:
        """The run summary. ``points`` / ``map_frames`` describe the map.ply on disk; accuracy is
        computed for the final summary only (it costs a pass over every frame)."""
        summary = {
            "status": status,
            **self.stats.summary(),
            "points": self.outputs.map_points,
            "map_frames": self.outputs.map_frames,
            "pose_fallbacks": self.pose_fallbacks,
            "revisit_corrections": self.revisit_corrections,
            "blank_frames": self.blank_frames,
            "ground_truth_failures": self.ground_truth_failures,
            "settings": self.settings,
        }
        if self.scorer is not None and final:
            summary["accuracy"] = self.scorer.result()
        return summary

    def _check_frame(self, frame: SourceFrame) -> bool:
        """Count and warn about a blank frame or unreadable ground truth; True if the frame may
        enter the map."""
        if frame.gt_problem is not None:
            self.ground_truth_failures += 1
            if _report_due(self.ground_truth_failures):
                print(f"warning: frame {frame.index}: ground truth not usable ({frame.gt_problem}); frame "
                      f"kept without it ({self.ground_truth_failures} such frames so far)", file=sys.stderr)
        std = texture_std(frame.image)
        if std >= MIN_TEXTURE_STD:
            return True
        self.blank_frames += 1
        if _report_due(self.blank_frames):
            print(f"warning: frame {frame.index}: no usable texture (intensity std {std:.2f} < "
                  f"{MIN_TEXTURE_STD:g}); kept out of the map ({self.blank_frames} such frames so far)",
                  file=sys.stderr)
        return False

    def run(self, frames: Iterable[SourceFrame], progress=None) -> dict:
        """Process every frame; returns the summary (also written to summary.json).

        Args:
            frames: the fitted frames, in order.
            progress: optional tqdm-like object with ``update(n)`` and ``set_postfix``.
        """
        session = StreamSession(self.model, self.device)
        status = "running"
        self.outputs.write_summary(self._summary(status, final=False))
        last_summary = time.monotonic()
        map_every = self.logger.options.map_every if self.logger else 0
        try:
            with _StopFlag() as stop:
                for frame in frames:
                    to_map = self._check_frame(frame)
                    pred = session.step(frame)
                    latency = pred.latency_ms
                    if pred.pose_fallbacks > self.pose_fallbacks:
                        print(f"warning: frame {frame.index}: no finite relative pose in the window; "
                              f"kept the previous pose ({pred.pose_fallbacks} such frames so far)",
                              file=sys.stderr)
                        self.pose_fallbacks = pred.pose_fallbacks
                    self.revisit_corrections = pred.revisit_corrections
                    map_saved = self.outputs.write_frame(pred, to_map=to_map)
                    if self.scorer is not None:
                        self.scorer.update(pred)
                    rss = self._process.memory_info().rss / 2**20
                    self.stats.latencies_ms.append(latency)
                    self.stats.rss_mb.append(rss)
                    self.outputs.timing.write(f"{frame.index} {latency:.3f} {rss:.1f} {pred.cpu_ms:.3f}")
                    if map_saved or time.monotonic() - last_summary >= self.summary_every_s:
                        self.outputs.write_summary(self._summary(status, final=False))
                        last_summary = time.monotonic()
                    if self.logger is not None:
                        metrics = {"fps": 1000.0 / latency, "latency_ms": latency, "rss_mb": rss}
                        self.logger.log_frame(pred, metrics)
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
                self.logger.finish()
            summary = self._summary(status)
            self.outputs.write_summary(summary)
        return summary

